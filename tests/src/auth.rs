//! The users of the authentication scenarios (`tests/python/auth.py` and the Java and Go
//! `auth` scenarios): a super user `root` created at start, and `app`, allowed Pub and Sub on
//! topics `auth-ok-*` but denied Pub on `auth-ok-readonly-*`, and Sub as groups `auth-grp-*`.

use rocketlog_broker::BrokerConfig;
use rocketlog_proto::admin::v1 as admin;

use crate::Cluster;

/// Turns authentication on with the super user `root` / `root-secret-key`.
pub fn enable(config: &mut BrokerConfig) {
    config.auth.enabled = true;
    config.auth.init_access_key = Some("root".into());
    config.auth.init_secret_key = Some("root-secret-key".into());
}

/// Adds `app` / `app-secret-key` and its rules through the admin API, signed as `root`.
pub fn add_app_user(cluster: &Cluster) -> anyhow::Result<()> {
    use admin::{AclAction as A, AclDecision as D, AclResource as R};
    let rule = |decision: D, action: A, resource: R, pattern: &str| admin::AclRule {
        decision: decision as i32,
        action: action as i32,
        resource: resource as i32,
        pattern: pattern.to_owned(),
    };
    let rules = [
        rule(D::Allow, A::Pub, R::Topic, "auth-ok-*"),
        rule(D::Allow, A::Sub, R::Topic, "auth-ok-*"),
        rule(D::Deny, A::Pub, R::Topic, "auth-ok-readonly-*"),
        rule(D::Allow, A::Sub, R::Group, "auth-grp-*"),
    ];
    cluster.admin_call(async move |client| {
        client
            .put_user(admin::PutUserRequest {
                access_key: "app".into(),
                secret_key: "app-secret-key".into(),
                super_user: false,
            })
            .await?;
        for rule in rules {
            client
                .grant(admin::GrantRequest {
                    access_key: "app".into(),
                    rule: Some(rule),
                })
                .await?;
        }
        Ok(())
    })
}
