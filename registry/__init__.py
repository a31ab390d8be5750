"""The registry cards shipped with zoo-core (one YAML file per published weight set)."""
