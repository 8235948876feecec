"""The local sandbox behind `referdesk demo` and `referdesk sandbox`: a demo trust anchor and certificates, a DNS
server publishing them, an SMTP HISP, an eFax gateway and a partner practice that answers, all on 127.0.0.1 and
all running referdesk's production code paths, only pointed at loopback."""
