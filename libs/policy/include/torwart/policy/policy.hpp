// The access policy: one JSONC document (format: docs/design/policy.md) compiled into an
// immutable, indexed Policy. Compile validates strictly and reports every error with its
// position; it also runs the document's own tests. A compiled Policy is immutable: any number of
// threads may call Decide/RunTests on it concurrently.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/error.hpp"
#include "torwart/policy/jsonc.hpp"

namespace torwart::policy {

struct Diagnostic {
  SourcePos pos;
  std::string message;
  // "line:column: message".
  std::string String() const;
};

// A machine or service behind a gateway, as the policy declares it.
struct Target {
  std::string name;
  std::string site;
  std::string gateway;
  std::string host;
  uint16_t port = 0;
  std::string protocol;           // modbus, s7, opcua, ssh, rdp, vnc, http, https, tcp
  std::vector<std::string> tags;  // its own tags plus its site's tags, sorted
  SourcePos pos;
};

struct TestResult {
  size_t index = 0;  // position in the document's `tests` array
  SourcePos pos;
  bool passed = false;
  std::string message;  // why it failed; empty when passed
};

class Policy {
 public:
  struct Impl;
  explicit Policy(std::unique_ptr<const Impl> impl);
  Policy(Policy&&) noexcept;
  Policy& operator=(Policy&&) noexcept;
  ~Policy();

  size_t rule_count() const;
  size_t target_count() const;
  // nullptr when the policy has no such target. The pointer lives as long as the Policy.
  const Target* FindTarget(std::string_view name) const;
  // Members the policy lists for `group` (directory members come with the query instead).
  const std::vector<std::string>* GroupMembers(std::string_view group) const;

  const Impl& impl() const { return *impl_; }

 private:
  std::unique_ptr<const Impl> impl_;
};

struct CompileOptions {
  JsoncLimits limits;
  // Run the document's `tests`; a failing test is a compile error.
  bool run_tests = true;
};

struct CompileResult {
  std::optional<Policy> policy;    // set only when `errors` is empty
  std::vector<Diagnostic> errors;  // every problem found, in document order
};

CompileResult CompileDetailed(std::string_view text, const CompileOptions& options = {});
// As CompileDetailed; on failure the Error (Errc::kInvalidArgument, or kParse /
// kResourceExhausted for malformed input) lists every diagnostic, one "line:col: message" a line.
Expected<Policy> Compile(std::string_view text, const CompileOptions& options = {});

// Runs the document's `tests` against the policy; one result per test, in order.
std::vector<TestResult> RunTests(const Policy& policy);

}  // namespace torwart::policy
