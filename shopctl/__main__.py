"""shopctl: the operator CLI. Jobs run the same code the services run on schedule.

Each area registers its own sub-app here; exit codes: 0 ok, 1 the job found a problem, 2 bad usage.
"""

from __future__ import annotations

import typer

from shopctl import audit, catalog, inventory, orders, outbox, retention, token

app = typer.Typer(no_args_is_help=True, help="Shopmesh operator CLI.", pretty_exceptions_enable=False)
app.add_typer(audit.app, name="audit")
app.add_typer(catalog.app, name="catalog")
app.add_typer(catalog.search_app, name="search")
app.add_typer(catalog.recs_app, name="recs")
app.add_typer(inventory.stock_app, name="stock")
app.add_typer(inventory.reservations_app, name="reservations")
app.add_typer(inventory.invariants_app, name="invariants")
app.add_typer(orders.app, name="orders")
app.add_typer(outbox.app, name="outbox")
app.add_typer(token.app, name="token")
app.add_typer(retention.app, name="retention")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
