"""What a running process needs around the library: helper threads, the HTTP endpoints, the embedded
broker, and bisection of a failing batch."""
