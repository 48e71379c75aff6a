//! Resolving `-u USER[:GROUP]` against the container's own /etc/passwd and /etc/group, as
//! docker does: names are looked up in the rootfs, numbers are taken as they are.
use std::{fs, path::PathBuf};

use super::error::RuntimeError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Resolves `spec` (empty means root) against the first of `roots` (a rootfs, or an image's
/// layers, topmost first) that has each file.
pub fn resolve_user(roots: &[PathBuf], spec: &str) -> Result<ProcessUser, RuntimeError> {
    let passwd = read_first(roots, "etc/passwd");
    let group = read_first(roots, "etc/group");
    let (user_part, group_part) = match spec.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (spec, None),
    };
    let (uid, primary_gid, user_name) = resolve_uid(&passwd, user_part)?;
    let gid = match group_part {
        Some(name) => resolve_gid(&group, name)?,
        None => primary_gid,
    };
    let additional_gids = user_name
        .map(|name| supplementary_groups(&group, &name))
        .unwrap_or_default();
    Ok(ProcessUser {
        uid,
        gid,
        additional_gids,
    })
}

fn read_first(roots: &[PathBuf], file: &str) -> String {
    roots
        .iter()
        .find_map(|root| fs::read_to_string(root.join(file)).ok())
        .unwrap_or_default()
}

fn resolve_uid(passwd: &str, user: &str) -> Result<(u32, u32, Option<String>), RuntimeError> {
    let user = if user.is_empty() { "0" } else { user };
    let entry = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 4 && (fields[0] == user || fields[2] == user));
    match (entry, user.parse::<u32>()) {
        (Some(fields), _) => {
            let number = |text: &str| text.parse::<u32>().ok();
            let (Some(uid), Some(gid)) = (number(fields[2]), number(fields[3])) else {
                return Err(RuntimeError::User(format!(
                    "malformed /etc/passwd entry for {user:?}"
                )));
            };
            Ok((uid, gid, Some(fields[0].to_string())))
        }
        (None, Ok(uid)) => Ok((uid, uid, None)),
        (None, Err(_)) => Err(RuntimeError::User(format!(
            "unknown user {user:?}: it is not in the container's /etc/passwd; use a numeric uid"
        ))),
    }
}

fn resolve_gid(group: &str, name: &str) -> Result<u32, RuntimeError> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(gid);
    }
    group
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.len() >= 3 && fields[0] == name)
        .and_then(|fields| fields[2].parse().ok())
        .ok_or_else(|| {
            RuntimeError::User(format!(
                "unknown group {name:?}: it is not in the container's /etc/group; use a numeric gid"
            ))
        })
}

fn supplementary_groups(group: &str, user: &str) -> Vec<u32> {
    group
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| fields.len() >= 4 && fields[3].split(',').any(|member| member == user))
        .filter_map(|fields| fields[2].parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("hostnetd-user-{}", std::process::id()));
        fs::create_dir_all(dir.join("etc")).unwrap();
        fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nwww:x:33:33::/var/www:/bin/false\n",
        )
        .unwrap();
        fs::write(
            dir.join("etc/group"),
            "root:x:0:\nwww:x:33:\nlog:x:4:www,syslog\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let root = rootfs();
        let root_user = ProcessUser {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
        };
        assert_eq!(
            resolve_user(std::slice::from_ref(&root), "").unwrap(),
            root_user
        );
        let www = resolve_user(std::slice::from_ref(&root), "www").unwrap();
        assert_eq!((www.uid, www.gid, www.additional_gids), (33, 33, vec![4]));
        assert_eq!(
            resolve_user(std::slice::from_ref(&root), "1234:log")
                .unwrap()
                .gid,
            4
        );
        assert_eq!(
            resolve_user(std::slice::from_ref(&root), "1234")
                .unwrap()
                .gid,
            1234
        );
        assert!(resolve_user(std::slice::from_ref(&root), "nobody-here")
            .unwrap_err()
            .to_string()
            .contains("numeric uid"));
        assert!(resolve_user(std::slice::from_ref(&root), "www:nogroup").is_err());
        fs::remove_dir_all(root).unwrap();
    }
}
