"""One Pulumi ComponentResource per concern of the lab; __main__.py wires them together."""
