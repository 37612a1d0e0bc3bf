"""The attack suite: each probe of issue 16 replayed against `nobat serve` over real sockets."""
