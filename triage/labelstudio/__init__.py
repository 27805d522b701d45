"""Label Studio integration."""
