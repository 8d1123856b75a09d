"""The core: domain objects and rules. Imports nothing but the standard library."""
