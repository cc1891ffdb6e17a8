"""`python -m order_svc`: build settings, bootstrap, serve."""

from meshkit.server import run_service
from order_svc.bootstrap import make_setup
from order_svc.config import load


def main() -> None:
    settings = load()
    run_service(settings, schema="orders", package="order_svc", setup=make_setup(settings))


if __name__ == "__main__":
    main()
