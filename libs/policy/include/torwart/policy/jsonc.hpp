// JSON with comments (// and /* */, trailing commas), parsed into a tree that keeps the line and
// column of every value and key, for error messages that point into the policy document.
// Built for untrusted input: bounded depth and size, strict UTF-8, never throws or crashes.
// Values are immutable after parsing; concurrent reads are safe.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "torwart/core/error.hpp"

namespace torwart::policy {

// 1-based line and column; the column counts Unicode code points, not bytes.
struct SourcePos {
  uint32_t line = 0;
  uint32_t column = 0;
  // "line:column".
  std::string String() const;
};

struct JsoncLimits {
  size_t max_bytes = 16 * 1024 * 1024;
  int max_depth = 64;
};

class Value {
 public:
  enum class Kind : uint8_t { kNull, kBool, kNumber, kString, kArray, kObject };
  struct Member;

  Kind kind() const { return kind_; }
  SourcePos pos() const { return pos_; }
  bool IsNull() const { return kind_ == Kind::kNull; }
  bool IsBool() const { return kind_ == Kind::kBool; }
  bool IsNumber() const { return kind_ == Kind::kNumber; }
  bool IsString() const { return kind_ == Kind::kString; }
  bool IsArray() const { return kind_ == Kind::kArray; }
  bool IsObject() const { return kind_ == Kind::kObject; }
  // True for numbers written without fraction or exponent that fit in int64.
  bool IsInteger() const { return kind_ == Kind::kNumber && is_integer_; }

  bool AsBool() const { return bool_; }
  double AsDouble() const { return number_; }
  int64_t AsInt() const { return integer_; }
  const std::string& AsString() const { return string_; }
  const std::vector<Value>& Items() const { return items_; }
  // Members in document order; duplicates are kept (the policy validator reports them).
  const std::vector<Member>& Members() const { return members_; }
  // First member named `key`, or nullptr.
  const Value* Find(std::string_view key) const;

  // "null", "boolean", "number", "string", "array", "object".
  static const char* KindName(Kind kind);

 private:
  friend class JsoncParser;
  Kind kind_ = Kind::kNull;
  bool bool_ = false;
  bool is_integer_ = false;
  SourcePos pos_;
  double number_ = 0;
  int64_t integer_ = 0;
  std::string string_;
  std::vector<Value> items_;
  std::vector<Member> members_;
};

struct Value::Member {
  std::string key;
  SourcePos key_pos;
  Value value;
};

// The error message starts with "line:column: ". Error code: Errc::kParse, or
// Errc::kResourceExhausted when a limit is exceeded.
Expected<Value> ParseJsonc(std::string_view text, const JsoncLimits& limits = {});

}  // namespace torwart::policy
