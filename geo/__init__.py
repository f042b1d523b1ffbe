"""Pure domain logic of diachiso: no database, no web, no settings."""
