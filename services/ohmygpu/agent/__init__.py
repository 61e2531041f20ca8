"""The node agent (`omg node join`): a machine that lends its devices to a daemon."""
