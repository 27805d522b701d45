"""Where annotators work: the console's rendering and the Label Studio integration."""
