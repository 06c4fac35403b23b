# Industrial monitor: fast ADC sampling, threshold alarms over MQTT, statistics over HTTP.
import app

app.main()
