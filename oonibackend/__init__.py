"""oonibackend: probe services, durable measurement intake, fastpath and read API for OONI."""

__version__ = "0.1.0"
