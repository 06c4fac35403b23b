# Wall-switch node: a push button that drives a relay node over MQTT, a status LED that shows it.
import app

app.main()
