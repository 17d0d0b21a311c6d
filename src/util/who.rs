//! Who is acting, for the audit trail and the lease: the operator's account and the host.
//!
//! Neither is ever blank: `$USER` is unset in tmux panes started by a service, in containers and
//! in Kubernetes jobs, so the account falls back to `$LOGNAME`, then to the OS account of the
//! current uid (or `uid <n>` when that uid has no passwd entry, as in containers run with an
//! arbitrary uid), then to `unknown`; the host to `/etc/hostname`, `$HOSTNAME`, the kernel's
//! host name, then `localhost`.

/// The operator: `$USER`, else `$LOGNAME`, else the OS account of the current uid, else
/// `unknown` (never empty).
pub fn operator() -> String {
    operator_from(non_blank_var("USER"), non_blank_var("LOGNAME"), account_name)
}

/// [`operator`] with its lookups passed in: the first of `user`, `logname` and `account()` that
/// is present and not blank, else `unknown`. `account` is only called when both variables are
/// missing or blank.
pub fn operator_from(user: Option<String>, logname: Option<String>, account: impl FnOnce() -> Option<String>) -> String {
    user.filter(|s| !is_blank(s))
        .or_else(|| logname.filter(|s| !is_blank(s)))
        .or_else(|| account().filter(|s| !is_blank(s)))
        .unwrap_or_else(|| "unknown".to_string())
}

/// This host's name: `/etc/hostname`, else `$HOSTNAME`, else the kernel's host name, else
/// `localhost` (never empty).
pub fn hostname() -> String {
    hostname_from(
        std::fs::read_to_string("/etc/hostname").ok(),
        non_blank_var("HOSTNAME"),
        system_hostname,
    )
}

/// [`hostname`] with its lookups passed in: the first of `etc_hostname`, `env_hostname` and
/// `system()` that is not blank (trimmed), else `localhost`. `system` is only called when both
/// others are missing or blank.
pub fn hostname_from(etc_hostname: Option<String>, env_hostname: Option<String>, system: impl FnOnce() -> Option<String>) -> String {
    let trimmed = |s: String| Some(s.trim().to_string()).filter(|s| !s.is_empty());
    etc_hostname
        .and_then(trimmed)
        .or_else(|| env_hostname.and_then(trimmed))
        .or_else(|| system().and_then(trimmed))
        .unwrap_or_else(|| "localhost".to_string())
}

/// `operator@host`, e.g. `alice@etl-worker-3`.
pub fn who() -> String {
    format!("{}@{}", operator(), hostname())
}

fn is_blank(s: &str) -> bool {
    s.trim().is_empty()
}

/// An environment variable that is set, valid UTF-8 and not blank.
fn non_blank_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|s| !is_blank(s))
}

/// The account name of the current uid from the passwd database (files, LDAP, sssd: whatever
/// NSS is configured with); `uid <n>` when the uid has no entry.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn account_name() -> Option<String> {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mut size: usize = 1024;
    loop {
        let mut buf: Vec<libc::c_char> = vec![0; size];
        // SAFETY: `passwd` is plain old data (integers and pointers); all zeros is a valid value,
        // overwritten by getpwuid_r on success.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is to a live local, `buf` is writable for `buf.len()` bytes; on
        // success `found` points at `entry`, whose strings point into `buf`.
        let rc = unsafe { libc::getpwuid_r(uid, &mut entry, buf.as_mut_ptr(), buf.len(), &mut found) };
        if rc == libc::ERANGE && size < (1 << 20) {
            size *= 4;
            continue;
        }
        if rc != 0 || found.is_null() || entry.pw_name.is_null() {
            return Some(format!("uid {uid}"));
        }
        // SAFETY: pw_name is non-null and NUL-terminated inside `buf`, which is still alive.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) }.to_string_lossy().into_owned();
        return Some(if is_blank(&name) { format!("uid {uid}") } else { name });
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn account_name() -> Option<String> {
    None
}

/// The kernel's host name (gethostname(2)).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn system_hostname() -> Option<String> {
    // Linux host names are at most 64 bytes; POSIX allows up to 255.
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is writable for its whole length, which is what gethostname is told.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast::<libc::c_char>(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    Some(String::from_utf8_lossy(&buf[..end]).into_owned())
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn system_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    fn not_asked() -> Option<String> {
        panic!("the OS account is only looked up when $USER and $LOGNAME are missing or blank")
    }

    #[test]
    fn operator_prefers_user_then_logname_then_the_os_account() {
        assert_eq!(operator_from(some("alice"), some("bob"), not_asked), "alice");
        assert_eq!(operator_from(None, some("bob"), not_asked), "bob");
        assert_eq!(operator_from(some(""), some("bob"), not_asked), "bob");
        assert_eq!(operator_from(some("  "), some("bob"), not_asked), "bob");
        assert_eq!(operator_from(None, None, || some("carol")), "carol");
        assert_eq!(operator_from(some(""), some(""), || some("carol")), "carol");
    }

    #[test]
    fn operator_is_never_blank() {
        assert_eq!(operator_from(None, None, || None), "unknown");
        assert_eq!(operator_from(some(""), None, || some("")), "unknown");
        assert_eq!(operator_from(None, some(" "), || some(" ")), "unknown");
        assert!(!is_blank(&operator()));
    }

    /// The real lookup, as used when $USER and $LOGNAME are unset (a container, a Kubernetes
    /// job): a name, or `uid <n>` for a uid without a passwd entry — never blank.
    #[test]
    fn the_os_account_of_this_process_has_a_name() {
        let account = operator_from(None, None, account_name);
        assert!(!is_blank(&account), "{account:?}");
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        assert!(account_name().is_some_and(|n| !is_blank(&n)), "{account:?}");
    }

    #[test]
    fn hostname_prefers_etc_hostname_then_the_environment_then_the_kernel() {
        let no_system = || -> Option<String> { panic!("the kernel is only asked when the others are blank") };
        assert_eq!(hostname_from(some("etl-3\n"), some("other"), no_system), "etl-3");
        assert_eq!(hostname_from(some("\n"), some(" pod-7 "), no_system), "pod-7");
        assert_eq!(hostname_from(None, None, || some("kernel-name")), "kernel-name");
        assert_eq!(hostname_from(None, some(""), || None), "localhost");
        assert_eq!(hostname_from(some(""), None, || some("\n")), "localhost");
    }

    #[test]
    fn hostname_and_who_are_never_blank() {
        let host = hostname();
        assert!(!is_blank(&host) && host == host.trim(), "{host:?}");
        let who = who();
        assert!(who.ends_with(&format!("@{host}")) && !who.starts_with('@'), "{who:?}");
    }
}
