"""The mailhost application: config, CLI, service, directory."""
