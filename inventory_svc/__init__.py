"""inventory_svc: stock per warehouse and reservations that never oversell."""
