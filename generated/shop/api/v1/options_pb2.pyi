from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Access(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ACCESS_UNSPECIFIED: _ClassVar[Access]
    ACCESS_ANONYMOUS: _ClassVar[Access]
    ACCESS_USER: _ClassVar[Access]
    ACCESS_ADMIN: _ClassVar[Access]
ACCESS_UNSPECIFIED: Access
ACCESS_ANONYMOUS: Access
ACCESS_USER: Access
ACCESS_ADMIN: Access
ACCESS_FIELD_NUMBER: _ClassVar[int]
access: _descriptor.FieldDescriptor
RATE_LIMIT_CLASS_FIELD_NUMBER: _ClassVar[int]
rate_limit_class: _descriptor.FieldDescriptor
SUCCESS_STATUS_FIELD_NUMBER: _ClassVar[int]
success_status: _descriptor.FieldDescriptor
HEADER_BINDINGS_FIELD_NUMBER: _ClassVar[int]
header_bindings: _descriptor.FieldDescriptor
FANOUT_SERVICES_FIELD_NUMBER: _ClassVar[int]
fanout_services: _descriptor.FieldDescriptor

class HeaderBinding(_message.Message):
    __slots__ = ("header", "field")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    header: str
    field: str
    def __init__(self, header: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...
