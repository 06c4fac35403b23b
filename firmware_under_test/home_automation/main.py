# Home-automation node: relays and a push button, driven over MQTT.
import app

app.main()
