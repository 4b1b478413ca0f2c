"""Business rules shared by the agent API, the client API, the UI and the admin CLI. Every
function takes a SQLAlchemy `Session`; tenant scoping happens here, never in route handlers."""
