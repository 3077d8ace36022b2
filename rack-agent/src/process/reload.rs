//! What a running agent changes without a restart (SIGHUP): the static
//! root, the DHCP lease time and boot files, the log filter. Everything
//! else is reported as needing a restart.

use std::path::PathBuf;
use std::sync::Arc;

use rackboot_dhcp_core::ServerConfig;
use tokio::sync::watch;

use crate::config::settings::AgentConfig;
use crate::store::files::load_static_root;

/// What a running agent can change without a restart (SIGHUP).
pub struct AgentControl {
    pub(super) statics: watch::Sender<Arc<crate::store::files::StaticFiles>>,
    pub(super) static_root: Arc<std::sync::Mutex<Option<PathBuf>>>,
    pub(super) core: watch::Sender<Arc<ServerConfig>>,
    pub(super) running: AgentConfig,
}

impl AgentControl {
    /// Apply what can change live from `new` (static root, DHCP lease time
    /// and boot file names, provisional lease time is not live); return
    /// (applied, needs a restart) as lists of setting names. Nothing is
    /// changed for settings that need a restart.
    /// The static root is walked and loaded on a blocking thread, never on
    /// the task that waits for signals.
    pub async fn apply(&mut self, new: &AgentConfig) -> (Vec<&'static str>, Vec<&'static str>) {
        let old = &self.running;
        let mut applied = Vec::new();
        let mut restart = Vec::new();
        // Settings that need a restart are reported and stay as they run.
        let mut kept = new.clone();
        macro_rules! restart_if_changed {
            ($($field:ident),*) => {$(
                if old.$field != new.$field {
                    restart.push(stringify!($field));
                    kept.$field = old.$field.clone();
                }
            )*};
        }
        restart_if_changed!(
            rack,
            coordinators,
            data_dir,
            log_spool_bytes,
            cache_max_bytes,
            server_ip,
            subnet,
            node_base,
            gateway,
            iface,
            dhcp_listen,
            dhcp_client_port,
            dhcp_mode,
            proxy_boot_port,
            allow,
            tftp_listen,
            tftp,
            http_listen,
            http_max_connections,
            http_max_per_source,
            metrics_listen,
            syslog_listen,
            accept,
            provisional
        );
        if old.static_root != new.static_root {
            match &new.static_root {
                Some(root) => match load_off_runtime(root.clone()).await {
                    Ok(files) => {
                        self.statics.send_replace(Arc::new(files));
                        applied.push("static_root");
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, root = %root.display(), "new static root unreadable; keeping the old one");
                    }
                },
                None => {
                    self.statics.send_replace(Arc::default());
                    applied.push("static_root");
                }
            }
            *self.static_root.lock().unwrap_or_else(|e| e.into_inner()) = new.static_root.clone();
        }
        let mut core = (**self.core.borrow()).clone();
        let mut core_changed = false;
        if old.lease_secs != new.lease_secs {
            core.lease_secs = new.lease_secs;
            applied.push("lease_secs");
            core_changed = true;
        }
        if old.bios_boot_file != new.bios_boot_file
            || old.uefi_x64_boot_file != new.uefi_x64_boot_file
            || old.uefi_arm64_boot_file != new.uefi_arm64_boot_file
        {
            core.boot.bios = new.bios_boot_file.clone();
            core.boot.uefi_x64 = new.uefi_x64_boot_file.clone();
            core.boot.uefi_arm64 = new.uefi_arm64_boot_file.clone();
            applied.push("boot_files");
            core_changed = true;
        }
        if core_changed {
            self.core.send_replace(Arc::new(core));
        }
        self.running = kept;
        (applied, restart)
    }
}

/// [`load_static_root`] on a blocking thread (a symlink tree may be deep).
async fn load_off_runtime(root: PathBuf) -> Result<crate::store::files::StaticFiles, String> {
    match tokio::task::spawn_blocking(move || load_static_root(&root)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) => Err(format!("static root loader failed: {e}")),
    }
}
