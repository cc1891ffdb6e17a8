"""shopctl stock / reservations / invariants: the inventory jobs, run by the same code the service runs."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from inventory_svc.config import InventorySettings
from inventory_svc.jobs import check_invariants, release_expired_reservations
from inventory_svc.model import Movement
from inventory_svc.service import InventoryService
from meshkit.context import Principal, principal_var
from meshkit.errors import DomainError
from meshkit.settings import load_settings
from shopctl.common import run, schema_pool

stock_app = typer.Typer(no_args_is_help=True, help="Show or adjust stock.")
reservations_app = typer.Typer(no_args_is_help=True, help="Reservation jobs.")
invariants_app = typer.Typer(no_args_is_help=True, help="Inventory invariant checks.")
console = Console()


async def _with_service(work):
    settings = load_settings(InventorySettings)
    async with schema_pool("inventory", database_url=settings.database_url) as pool:
        return await work(pool, InventoryService(pool=pool, settings=settings))


@stock_app.command("show")
def stock_show(product_id: int) -> None:
    """Stock of one product per warehouse."""
    try:
        stock = run(_with_service(lambda pool, svc: svc.get_stock(product_id)))
    except DomainError as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(1) from None
    table = Table("warehouse", "quantity", "reserved", "available")
    for w in stock.warehouses:
        table.add_row(str(w.warehouse_id), str(w.quantity), str(w.reserved), str(w.available))
    console.print(table)
    console.print(f"available in total: {stock.available}")


@stock_app.command("adjust")
def stock_adjust(
    product_id: int,
    warehouse_id: int = typer.Option(..., "--warehouse"),
    delta: int = typer.Option(..., "--delta"),
    reason: str = typer.Option("", "--reason"),
    actor: str = typer.Option("shopctl", "--actor", help="recorded in the ledger and the audit trail"),
) -> None:
    """Change a warehouse's quantity by DELTA (audited, conditional: never below what is reserved)."""
    principal_var.set(Principal(actor, ("admin",)))
    try:
        stock = run(
            _with_service(
                lambda pool, svc: svc.change_stock(
                    product_id=product_id,
                    warehouse_id=warehouse_id,
                    delta=delta,
                    movement=Movement.ADJUST,
                    reason=reason,
                )
            )
        )
    except DomainError as error:
        console.print(f"[red]{error.message}[/red]")
        raise typer.Exit(1) from None
    console.print(f"product {product_id}: available {stock.available}")


@reservations_app.command("expire")
def reservations_expire(batch_size: int = typer.Option(500, min=1, max=10_000)) -> None:
    """Release every reservation past its expiry now (what the in-service sweeper does)."""
    principal_var.set(Principal("job:reservation-expiry", ("service",)))
    count, units = run(
        _with_service(lambda pool, svc: release_expired_reservations(pool, svc, batch_size=batch_size))
    )
    console.print(f"expired {count} reservations, released {units} units")


@invariants_app.command("check")
def invariants_check() -> None:
    """reserved == active reservations, 0 <= reserved <= quantity, ledger == stock; exit 1 on drift."""
    violations = run(_with_service(lambda pool, svc: check_invariants(pool, full=True)))
    if violations:
        for row in violations:
            console.print(f"[red]drift[/red] {dict(row)}")
        raise typer.Exit(1)
    console.print("inventory invariants hold")
