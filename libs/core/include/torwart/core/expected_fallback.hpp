// Minimal std::expected subset for toolchains without <expected> (clang 14 + libstdc++ 12, used
// for the libFuzzer build). Included by error.hpp after Error is defined. Supports exactly what
// torwart code may use: construction from a value or Unexpected, has_value/operator bool,
// value/operator*/operator->, error, value_or. Do not use and_then/transform/or_else.
#pragma once

#include <cstdlib>
#include <type_traits>
#include <utility>
#include <variant>

namespace torwart {

class Unexpected {
 public:
  explicit Unexpected(Error e) : e_(std::move(e)) {}
  Error& error() & { return e_; }
  const Error& error() const& { return e_; }
  Error&& error() && { return std::move(e_); }

 private:
  Error e_;
};

template <class T>
class [[nodiscard]] Expected {
 public:
  using value_type = T;
  using error_type = Error;
  Expected() requires std::is_default_constructible_v<T> : v_(std::in_place_index<0>) {}
  template <class U = T>
    requires(std::is_constructible_v<T, U&&> &&
             !std::is_same_v<std::remove_cvref_t<U>, Expected> &&
             !std::is_same_v<std::remove_cvref_t<U>, Unexpected>)
  Expected(U&& v) : v_(std::in_place_index<0>, std::forward<U>(v)) {}
  Expected(Unexpected u) : v_(std::in_place_index<1>, std::move(u).error()) {}

  bool has_value() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return has_value(); }
  T& value() & { Check(); return std::get<0>(v_); }
  const T& value() const& { Check(); return std::get<0>(v_); }
  T&& value() && { Check(); return std::move(std::get<0>(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  Error& error() & { return std::get<1>(v_); }
  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::move(std::get<1>(v_)); }
  template <class U>
  T value_or(U&& d) const& { return has_value() ? std::get<0>(v_) : static_cast<T>(std::forward<U>(d)); }

 private:
  void Check() const { if (!has_value()) std::abort(); }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Expected<void> {
 public:
  using value_type = void;
  using error_type = Error;
  Expected() = default;
  Expected(Unexpected u) : err_(std::move(u).error()), has_(false) {}
  bool has_value() const noexcept { return has_; }
  explicit operator bool() const noexcept { return has_; }
  void value() const { if (!has_) std::abort(); }
  void operator*() const {}
  Error& error() & { return err_; }
  const Error& error() const& { return err_; }

 private:
  Error err_;
  bool has_ = true;
};

}  // namespace torwart
