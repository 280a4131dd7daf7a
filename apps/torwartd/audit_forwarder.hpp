// Store-and-forward of audit records to a SIEM: RFC 5424 messages over TLS with RFC 5425
// octet counting. A persistent cursor (kv "audit.syslog.cursor") holds the last forwarded seq;
// it advances only after the record was written to the TLS connection. One thread; the public
// methods are thread-safe.
#pragma once

#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "server_config.hpp"
#include "torwart/storage/store.hpp"

namespace torwart::server {

class AuditForwarder {
 public:
  AuditForwarder(storage::AuditStore& store, storage::KeyValueRepo& kv, AuditSyslogConfig cfg);
  ~AuditForwarder();
  void Start();
  void Stop();
  // New records were committed: forward soon.
  void Wake();

  struct Status {
    bool connected = false;
    int64_t cursor = 0;
    std::string error;
  };
  Status status() const;

 private:
  void Run();

  storage::AuditStore& store_;
  storage::KeyValueRepo& kv_;
  AuditSyslogConfig cfg_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false, woken_ = false;
  Status status_;
  std::thread thread_;
};

}  // namespace torwart::server
