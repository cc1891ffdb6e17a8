"""order_svc: cart, exactly-once checkout with payment, order lifecycle, events, archival."""
