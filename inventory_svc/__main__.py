"""`python -m inventory_svc`: build settings, bootstrap, serve."""

from inventory_svc.bootstrap import make_setup
from inventory_svc.config import InventorySettings
from meshkit.server import run_service
from meshkit.settings import load_settings


def main() -> None:
    settings = load_settings(InventorySettings)
    run_service(settings, schema="inventory", package="inventory_svc", setup=make_setup(settings))


if __name__ == "__main__":
    main()
