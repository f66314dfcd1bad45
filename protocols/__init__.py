"""Wire protocols: one subpackage each. Cores are sans-IO."""
