# Battery node: reads an SHT3x and its battery, publishes over MQTT-SN, deep-sleeps between readings.
import app

app.main()
