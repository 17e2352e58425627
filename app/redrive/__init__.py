"""``txingest redrive``: dead letters back to the input topic, exactly once."""
