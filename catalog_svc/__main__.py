"""`python -m catalog_svc`: build settings, bootstrap, serve."""

from catalog_svc.bootstrap import make_setup
from catalog_svc.config import CatalogSettings
from meshkit.server import run_service
from meshkit.settings import load_settings


def main() -> None:
    settings = load_settings(CatalogSettings)
    run_service(settings, schema="catalog", package="catalog_svc", setup=make_setup(settings))


if __name__ == "__main__":
    main()
