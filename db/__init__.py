"""The booking store: models, the booking service (the only writer of appointments), schema."""
