# Weather station: BME280 + battery voltage, JSON telemetry over MQTT, buffered through outages.
import app

app.main()
