"""Risk-adapted follow-up: simulated CT and ctDNA surveillance schedules and the trial that tests them."""
