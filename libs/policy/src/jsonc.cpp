#include "torwart/policy/jsonc.hpp"

#include <charconv>
#include <cmath>
#include <optional>

#include "jsonc_internal.hpp"

namespace torwart::policy {

std::string SourcePos::String() const {
  return std::to_string(line) + ":" + std::to_string(column);
}

const Value* Value::Find(std::string_view key) const {
  for (const Member& m : members_) {
    if (m.key == key) return &m.value;
  }
  return nullptr;
}

const char* Value::KindName(Kind kind) {
  switch (kind) {
    case Kind::kNull:
      return "null";
    case Kind::kBool:
      return "boolean";
    case Kind::kNumber:
      return "number";
    case Kind::kString:
      return "string";
    case Kind::kArray:
      return "array";
    case Kind::kObject:
      return "object";
  }
  return "?";
}

// Recursive descent; recursion depth is bounded by limits.max_depth, so the stack stays small.
class JsoncParser {
 public:
  JsoncParser(std::string_view text, const JsoncLimits& limits) : s_(text), limits_(limits) {}

  bool Parse(Value& out) {
    if (s_.size() > limits_.max_bytes) {
      return Fail(Errc::kResourceExhausted,
                  "document is larger than " + std::to_string(limits_.max_bytes) + " bytes");
    }
    if (!CheckUtf8()) return false;
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") Advance(3);
    if (!SkipSpace()) return false;
    if (AtEnd()) return Fail(Errc::kParse, "empty document");
    if (!ParseValue(out, 0)) return false;
    if (!SkipSpace()) return false;
    if (!AtEnd()) return Fail(Errc::kParse, "unexpected text after the document");
    return true;
  }

  Errc code = Errc::kParse;
  SourcePos error_pos;
  std::string error;

 private:
  bool AtEnd() const { return i_ >= s_.size(); }
  char Peek(size_t k = 0) const { return i_ + k < s_.size() ? s_[i_ + k] : '\0'; }
  SourcePos Here() const { return {line_, col_}; }

  void Advance(size_t n = 1) {
    for (size_t k = 0; k < n && i_ < s_.size(); ++k) {
      unsigned char c = static_cast<unsigned char>(s_[i_++]);
      if (c == '\n') {
        ++line_;
        col_ = 1;
      } else if ((c & 0xC0) != 0x80) {
        // Continuation bytes do not start a new code point.
        ++col_;
      }
    }
  }

  bool Fail(Errc c, std::string msg) { return FailAt(Here(), c, std::move(msg)); }
  bool FailAt(SourcePos p, Errc c, std::string msg) {
    if (error.empty()) {
      code = c;
      error_pos = p;
      error = std::move(msg);
    }
    return false;
  }

  // Validates the whole input as UTF-8 up front (no overlongs, no surrogates, <= U+10FFFF) and
  // rejects NUL, so later stages can treat every byte sequence as well formed.
  bool CheckUtf8() {
    uint32_t line = 1, col = 1;
    size_t i = 0;
    while (i < s_.size()) {
      auto c = static_cast<unsigned char>(s_[i]);
      size_t n = 0;
      uint32_t cp = 0;
      if (c < 0x80) {
        if (c == 0) {
          return FailAt({line, col}, Errc::kParse, "NUL byte in document");
        }
        n = 1;
        cp = c;
      } else if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
      } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
      } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
      } else {
        return FailAt({line, col}, Errc::kParse, "invalid UTF-8");
      }
      if (i + n > s_.size()) return FailAt({line, col}, Errc::kParse, "invalid UTF-8");
      for (size_t k = 1; k < n; ++k) {
        auto cc = static_cast<unsigned char>(s_[i + k]);
        if ((cc & 0xC0) != 0x80) return FailAt({line, col}, Errc::kParse, "invalid UTF-8");
        cp = (cp << 6) | (cc & 0x3F);
      }
      static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
      if (cp < kMin[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return FailAt({line, col}, Errc::kParse, "invalid UTF-8");
      }
      if (c == '\n') {
        ++line;
        col = 1;
      } else {
        ++col;
      }
      i += n;
    }
    return true;
  }

  bool SkipSpace() {
    while (!AtEnd()) {
      char c = Peek();
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
        Advance();
      } else if (c == '/' && Peek(1) == '/') {
        while (!AtEnd() && Peek() != '\n') Advance();
      } else if (c == '/' && Peek(1) == '*') {
        SourcePos start = Here();
        Advance(2);
        while (!AtEnd() && !(Peek() == '*' && Peek(1) == '/')) Advance();
        if (AtEnd()) return FailAt(start, Errc::kParse, "unterminated /* comment");
        Advance(2);
      } else {
        break;
      }
    }
    return true;
  }

  bool ParseValue(Value& v, int depth) {
    if (depth >= limits_.max_depth) {
      return Fail(Errc::kResourceExhausted,
                  "nesting deeper than " + std::to_string(limits_.max_depth) + " levels");
    }
    v.pos_ = Here();
    char c = Peek();
    if (c == '{') return ParseObject(v, depth);
    if (c == '[') return ParseArray(v, depth);
    if (c == '"') {
      v.kind_ = Value::Kind::kString;
      return ParseString(v.string_);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return ParseNumber(v);
    if (Literal("true")) {
      v.kind_ = Value::Kind::kBool;
      v.bool_ = true;
      return true;
    }
    if (Literal("false")) {
      v.kind_ = Value::Kind::kBool;
      return true;
    }
    if (Literal("null")) return true;
    if (AtEnd()) return Fail(Errc::kParse, "unexpected end of document, expected a value");
    return Fail(Errc::kParse, "expected a value");
  }

  bool Literal(std::string_view word) {
    if (s_.substr(i_, word.size()) != word) return false;
    char after = Peek(word.size());
    if ((after >= 'a' && after <= 'z') || (after >= 'A' && after <= 'Z') ||
        (after >= '0' && after <= '9') || after == '_') {
      return false;
    }
    Advance(word.size());
    return true;
  }

  bool ParseObject(Value& v, int depth) {
    v.kind_ = Value::Kind::kObject;
    Advance();  // {
    while (true) {
      if (!SkipSpace()) return false;
      if (Peek() == '}') {
        Advance();
        return true;
      }
      if (AtEnd()) return Fail(Errc::kParse, "unterminated object, expected '}'");
      if (Peek() != '"') return Fail(Errc::kParse, "expected a key in double quotes or '}'");
      Value::Member m;
      m.key_pos = Here();
      if (!ParseString(m.key)) return false;
      if (!SkipSpace()) return false;
      if (Peek() != ':') return Fail(Errc::kParse, "expected ':' after key \"" + m.key + "\"");
      Advance();
      if (!SkipSpace()) return false;
      if (!ParseValue(m.value, depth + 1)) return false;
      v.members_.push_back(std::move(m));
      if (!SkipSpace()) return false;
      if (Peek() == ',') {
        Advance();
        continue;
      }
      if (Peek() == '}') {
        Advance();
        return true;
      }
      if (AtEnd()) return Fail(Errc::kParse, "unterminated object, expected '}'");
      return Fail(Errc::kParse, "expected ',' or '}'");
    }
  }

  bool ParseArray(Value& v, int depth) {
    v.kind_ = Value::Kind::kArray;
    Advance();  // [
    while (true) {
      if (!SkipSpace()) return false;
      if (Peek() == ']') {
        Advance();
        return true;
      }
      if (AtEnd()) return Fail(Errc::kParse, "unterminated array, expected ']'");
      v.items_.emplace_back();
      if (!ParseValue(v.items_.back(), depth + 1)) return false;
      if (!SkipSpace()) return false;
      if (Peek() == ',') {
        Advance();
        continue;
      }
      if (Peek() == ']') {
        Advance();
        return true;
      }
      if (AtEnd()) return Fail(Errc::kParse, "unterminated array, expected ']'");
      return Fail(Errc::kParse, "expected ',' or ']'");
    }
  }

  static int HexDigit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  std::optional<uint32_t> Hex4() {
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      int d = HexDigit(Peek(static_cast<size_t>(k)));
      if (d < 0) return std::nullopt;
      v = (v << 4) | static_cast<uint32_t>(d);
    }
    Advance(4);
    return v;
  }

  static void AppendUtf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  bool ParseString(std::string& out) {
    SourcePos start = Here();
    Advance();  // "
    while (true) {
      if (AtEnd()) return FailAt(start, Errc::kParse, "unterminated string");
      char c = Peek();
      if (c == '"') {
        Advance();
        return true;
      }
      if (static_cast<unsigned char>(c) < 0x20) {
        return Fail(Errc::kParse, "control character in string (use an escape)");
      }
      if (c != '\\') {
        out += c;
        Advance();
        continue;
      }
      SourcePos esc = Here();
      Advance();
      char e = Peek();
      Advance();
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::optional<uint32_t> cp = Hex4();
          if (!cp) return FailAt(esc, Errc::kParse, "\\u needs four hex digits");
          if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
            return FailAt(esc, Errc::kParse, "lone low surrogate in \\u escape");
          }
          if (*cp >= 0xD800 && *cp <= 0xDBFF) {
            if (Peek() != '\\' || Peek(1) != 'u') {
              return FailAt(esc, Errc::kParse, "high surrogate without low surrogate");
            }
            Advance(2);
            std::optional<uint32_t> lo = Hex4();
            if (!lo || *lo < 0xDC00 || *lo > 0xDFFF) {
              return FailAt(esc, Errc::kParse, "high surrogate without low surrogate");
            }
            *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*lo - 0xDC00);
          }
          if (*cp == 0) return FailAt(esc, Errc::kParse, "\\u0000 is not allowed");
          AppendUtf8(out, *cp);
          break;
        }
        default:
          return FailAt(esc, Errc::kParse, "invalid escape sequence");
      }
    }
  }

  bool ParseNumber(Value& v) {
    v.kind_ = Value::Kind::kNumber;
    size_t start = i_;
    size_t j = i_;
    auto digit = [&](size_t k) { return k < s_.size() && s_[k] >= '0' && s_[k] <= '9'; };
    if (j < s_.size() && s_[j] == '-') ++j;
    if (!digit(j)) return Fail(Errc::kParse, "invalid number");
    if (s_[j] == '0') {
      ++j;
      if (digit(j)) return Fail(Errc::kParse, "leading zeros are not allowed in numbers");
    } else {
      while (digit(j)) ++j;
    }
    bool integral = true;
    if (j < s_.size() && s_[j] == '.') {
      integral = false;
      ++j;
      if (!digit(j)) return Fail(Errc::kParse, "invalid number: digits expected after '.'");
      while (digit(j)) ++j;
    }
    if (j < s_.size() && (s_[j] == 'e' || s_[j] == 'E')) {
      integral = false;
      ++j;
      if (j < s_.size() && (s_[j] == '+' || s_[j] == '-')) ++j;
      if (!digit(j)) return Fail(Errc::kParse, "invalid number: digits expected in exponent");
      while (digit(j)) ++j;
    }
    std::string_view text = s_.substr(start, j - start);
    double d = 0;
    auto r = std::from_chars(text.data(), text.data() + text.size(), d);
    if (r.ec == std::errc::result_out_of_range || !std::isfinite(d)) {
      return Fail(Errc::kParse, "number out of range");
    }
    if (r.ec != std::errc()) return Fail(Errc::kParse, "invalid number");
    v.number_ = d;
    if (integral) {
      int64_t n = 0;
      auto ri = std::from_chars(text.data(), text.data() + text.size(), n);
      if (ri.ec == std::errc() && ri.ptr == text.data() + text.size()) {
        v.integer_ = n;
        v.is_integer_ = true;
      }
    }
    Advance(j - start);
    return true;
  }

  std::string_view s_;
  JsoncLimits limits_;
  size_t i_ = 0;
  uint32_t line_ = 1;
  uint32_t col_ = 1;
};

namespace detail {

bool ParseJsoncDetailed(std::string_view text, const JsoncLimits& limits, Value& out,
                        JsoncFailure& failure) {
  JsoncParser p(text, limits);
  if (p.Parse(out)) return true;
  failure.code = p.code;
  failure.pos = p.error_pos;
  failure.message = p.error;
  return false;
}

}  // namespace detail

Expected<Value> ParseJsonc(std::string_view text, const JsoncLimits& limits) {
  Value v;
  detail::JsoncFailure f;
  if (!detail::ParseJsoncDetailed(text, limits, v, f)) {
    return MakeError(f.code, f.pos.String() + ": " + f.message);
  }
  return v;
}

}  // namespace torwart::policy
