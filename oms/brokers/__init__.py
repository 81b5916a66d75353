"""Brokers behind one interface (``base.Broker``): the paper broker now, Kite next."""
