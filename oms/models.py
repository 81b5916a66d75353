"""Orders, positions and their audit trail arrive with the order-management issue."""
