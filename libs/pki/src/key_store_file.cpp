// The "file" key store: an unencrypted PKCS#8 PEM file, mode 0600, in a 0700 directory.
// Generate() writes a temp file, fsyncs it and renames it into place without replacing anything,
// then fsyncs the directory, so a crash leaves either no key or a complete one.
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>

#include "torwart/core/ids.hpp"
#include "torwart/pki/key_store.hpp"

namespace torwart::pki {
namespace {

namespace fs = std::filesystem;

std::string ErrnoText(int err) { return std::system_category().message(err); }

// Closes the descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// Holds secret bytes and wipes them on scope exit.
struct SecretString {
  std::string value;
  ~SecretString() { OPENSSL_cleanse(value.data(), value.size()); }
};

Expected<void> CheckP256(EVP_PKEY* key, const std::string& path) {
  char group[64] = {};
  size_t len = 0;
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_EC ||
      EVP_PKEY_get_group_name(key, group, sizeof(group), &len) != 1 ||
      std::string_view(group, len) != "prime256v1") {
    return MakeError(Errc::kInvalidArgument, "key file " + path + " is not an ECDSA P-256 key");
  }
  return {};
}

// Creates missing directories of `dir` with mode 0700 (existing ones are left as they are).
Expected<void> MakePrivateDirs(const fs::path& dir) {
  if (dir.empty()) return {};
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return MakeError(Errc::kIo, dir.string() + " exists and is not a directory");
    }
    return {};
  }
  if (errno != ENOENT) {
    return MakeError(Errc::kIo, "cannot stat " + dir.string() + ": " + ErrnoText(errno));
  }
  if (dir.has_parent_path() && dir.parent_path() != dir) {
    auto parent = MakePrivateDirs(dir.parent_path());
    if (!parent) return parent;
  }
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return MakeError(Errc::kIo,
                     "cannot create directory " + dir.string() + ": " + ErrnoText(errno));
  }
  return {};
}

Expected<void> WriteAll(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return MakeError(errno == ENOSPC ? Errc::kResourceExhausted : Errc::kIo,
                       "cannot write " + path + ": " + ErrnoText(errno));
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

// rename() that fails with EEXIST instead of replacing `to`.
int RenameNoReplace(const char* from, const char* to) {
  if (::renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
  if (errno != EINVAL && errno != ENOSYS) return -1;
  // The file system cannot do RENAME_NOREPLACE: link() also refuses to replace.
  if (::link(from, to) != 0) return -1;
  ::unlink(from);
  return 0;
}

class FileKeyStore final : public KeyStore {
 public:
  explicit FileKeyStore(fs::path path) : path_(std::move(path)) {}

  std::string Describe() const override { return "file:" + path_.string(); }
  bool Extractable() const override { return true; }

  Expected<EvpPkeyPtr> Load() override {
    Fd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (fd.get() < 0) {
      int err = errno;
      if (err == ENOENT) {
        return MakeError(Errc::kNotFound, "no device key at " + path_.string());
      }
      if (err == ELOOP) {
        return MakeError(Errc::kPermissionDenied,
                         "device key " + path_.string() + " is a symbolic link; refusing it");
      }
      return MakeError(err == EACCES ? Errc::kPermissionDenied : Errc::kIo,
                       "cannot open " + path_.string() + ": " + ErrnoText(err));
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) {
      return MakeError(Errc::kIo, "cannot stat " + path_.string() + ": " + ErrnoText(errno));
    }
    if (!S_ISREG(st.st_mode)) {
      return MakeError(Errc::kInvalidArgument, path_.string() + " is not a regular file");
    }
    if ((st.st_mode & 077) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
      return MakeError(Errc::kPermissionDenied, "device key " + path_.string() +
                                                    " is accessible by group or others (mode " +
                                                    mode + "); run: chmod 600 " + path_.string());
    }
    if (st.st_size > 64 * 1024) {
      return MakeError(Errc::kInvalidArgument, path_.string() + " is too large for a key file");
    }
    SecretString pem;
    pem.value.resize(static_cast<size_t>(st.st_size));
    size_t got = 0;
    while (got < pem.value.size()) {
      ssize_t n = ::read(fd.get(), pem.value.data() + got, pem.value.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        return MakeError(Errc::kIo, "cannot read " + path_.string() + ": " + ErrnoText(errno));
      }
      if (n == 0) break;
      got += static_cast<size_t>(n);
    }
    pem.value.resize(got);
    auto key = PrivateKeyFromPem(pem.value);
    if (!key) return MakeError(key.error().WithContext("reading " + path_.string()));
    auto p256 = CheckP256(key->get(), path_.string());
    if (!p256) return MakeError(p256.error());
    return key;
  }

  Expected<EvpPkeyPtr> Generate() override {
    const std::string path = path_.string();
    struct stat st {};
    if (::lstat(path_.c_str(), &st) == 0) {
      return MakeError(Errc::kAlreadyExists,
                       "a device key already exists at " + path + "; it is not replaced");
    }
    const fs::path dir = path_.parent_path();
    auto dirs = MakePrivateDirs(dir);
    if (!dirs) return MakeError(dirs.error().WithContext("creating the key directory"));

    auto key = GenerateP256Key();
    if (!key) return MakeError(key.error());
    SecretString pem;
    {
      auto text = PrivateKeyToPem(key->get());
      if (!text) return MakeError(text.error());
      pem.value = std::move(*text);
    }

    // The temp file sits next to the key so the rename stays within one file system.
    std::string tmp = path + ".tmp-" + HexEncode(RandomBytes(6));
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (fd.get() < 0) {
      return MakeError(errno == EACCES ? Errc::kPermissionDenied : Errc::kIo,
                       "cannot create " + tmp + ": " + ErrnoText(errno));
    }
    auto fail = [&tmp](Error e) {
      ::unlink(tmp.c_str());
      return MakeError(std::move(e));
    };
    // The umask may have cleared bits we want and cannot have added any; be explicit anyway.
    if (::fchmod(fd.get(), 0600) != 0) {
      return fail(Error(Errc::kIo, "cannot chmod " + tmp + ": " + ErrnoText(errno)));
    }
    auto written = WriteAll(fd.get(), pem.value, tmp);
    if (!written) return fail(written.error());
    if (::fsync(fd.get()) != 0) {
      return fail(Error(Errc::kIo, "cannot fsync " + tmp + ": " + ErrnoText(errno)));
    }
    if (::close(fd.Release()) != 0) {
      return fail(Error(Errc::kIo, "cannot close " + tmp + ": " + ErrnoText(errno)));
    }
    if (RenameNoReplace(tmp.c_str(), path.c_str()) != 0) {
      int err = errno;
      if (err == EEXIST) {
        return fail(Error(Errc::kAlreadyExists,
                          "a device key appeared at " + path + " meanwhile; it is not replaced"));
      }
      return fail(Error(Errc::kIo, "cannot rename " + tmp + " to " + path + ": " + ErrnoText(err)));
    }
    Fd dir_fd(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir_fd.get() < 0 || ::fsync(dir_fd.get()) != 0) {
      return MakeError(Errc::kIo, "cannot fsync directory of " + path + ": " + ErrnoText(errno));
    }
    return key;
  }

 private:
  fs::path path_;
};

}  // namespace

Expected<std::unique_ptr<KeyStore>> OpenFileKeyStore(const std::string& path) {
  if (path.empty() || path.front() != '/') {
    return MakeError(Errc::kInvalidArgument,
                     "file key store needs an absolute path, got '" + path + "'");
  }
  fs::path p(path);
  if (!p.has_filename()) {
    return MakeError(Errc::kInvalidArgument, "file key store path names a directory: " + path);
  }
  return std::unique_ptr<KeyStore>(std::make_unique<FileKeyStore>(p.lexically_normal()));
}

}  // namespace torwart::pki
