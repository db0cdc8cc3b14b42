audit "file" "file" {
  description = "audit volume"
  options = {
    "elide_list_responses" = "false"
    "file_path" = "/openbao/audit/audit.log"
    "format" = "json"
    "hmac_accessor" = "true"
    "log_raw" = "false"
    "mode" = "0600"
  }
}
audit "file" "stdout" {
  options = {
    "elide_list_responses" = "true"
    "file_path" = "stdout"
    "format" = "json"
    "hmac_accessor" = "true"
    "log_raw" = "false"
  }
}
audit "syslog" "syslog" {
  options = {
    "elide_list_responses" = "false"
    "facility" = "LOCAL0"
    "format" = "json"
    "hmac_accessor" = "true"
    "log_raw" = "false"
    "tag" = "openbao"
  }
}
