"""HTTP routers. Status codes live here only; handlers call services and shape answers."""
