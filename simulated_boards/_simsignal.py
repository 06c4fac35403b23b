# Signals: inputs that change over time, evaluated on the device from board time, so a hot loop
# reading a pin, an ADC or a sensor pays no round trip to the host.
# A signal is a dict the host builds (micropython_hil.sim.Signal): {"kind": ..., params, "t0": s}.
import math


def evaluate(sig, now_s):
    """Value of signal `sig` at board time now_s (seconds); t0 is when the board received it."""
    t = now_s - sig.get("t0", 0.0)
    kind = sig["kind"]
    if kind == "sine":
        return sig["mean"] + sig["amplitude"] * math.sin(2 * math.pi * t / sig["period"])
    if kind == "square":
        phase = (t % sig["period"]) / sig["period"]
        return sig["high"] if phase < sig["duty"] else sig["low"]
    if kind == "ramp":
        if t <= 0:
            return sig["start"]
        if t >= sig["duration"]:
            return sig["end"]
        return sig["start"] + (sig["end"] - sig["start"]) * t / sig["duration"]
    if kind == "steps":
        # [[t, v], ...] sorted by t: the value of the last step whose time has come.
        v = sig["steps"][0][1]
        for at, sv in sig["steps"]:
            if t >= at:
                v = sv
            else:
                break
        return v
    raise ValueError("unknown signal kind %r" % kind)
