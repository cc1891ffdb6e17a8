"""HTTP/JSON gateway: REST routes transcoded to gRPC from the protos' google.api.http annotations."""
