telemetry {
  prometheus_retention_time = "1h"
  disable_hostname = true
}
