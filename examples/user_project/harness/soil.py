"""What the team knows about its sensor: the probe's voltage at the two ends of its range."""

WET_V = 1.0    # probe in water
DRY_V = 2.6    # probe in dry air
DRY_BELOW = 0.30


def moisture(volts: float) -> float:
    """Fraction of the wet-to-dry range, as the firmware computes it."""
    return round(min(1.0, max(0.0, (DRY_V - volts) / (DRY_V - WET_V))), 3)
