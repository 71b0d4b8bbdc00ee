//! The `download` and `decrypt` steps in the plan: the spec as written (sizes, limits,
//! formats) with every template field compiled once when the plan is built, as
//! [`super::call_plan`] does for calls. A loop that downloads for 1,000 users renders these
//! templates 1,000 times and parses them once.
use std::ops::Deref;

use super::call_plan::{opt_tpl, tpl, tpl_value, PlanError};
use super::model::{DecryptSpec, DownloadSpec};
use crate::template::{Tpl, TplValue};

/// A `download` step: its spec, and its templates compiled (the fields of the same names).
#[derive(Debug, Clone)]
pub struct DownloadAction {
    /// The step as written; its non-template fields are read through [`Deref`].
    pub spec: DownloadSpec,
    /// `urls`: a list (or one URL).
    pub urls: TplValue,
    /// `names`: the file names, one per URL.
    pub names: Option<TplValue>,
    /// `to`: the directory.
    pub to: Tpl,
    /// `sha256`: expected digests, one per URL.
    pub sha256: Option<TplValue>,
    /// `md5`: expected MD5 digests, one per URL.
    pub md5: Option<TplValue>,
    /// `size`: expected sizes, one per URL.
    pub size: Option<TplValue>,
    /// `request_id`: the vendor request the files belong to.
    pub request_id: Option<Tpl>,
    /// `extract`'s templates, when it has one.
    pub extract: Option<ExtractTemplates>,
}

/// The templates of `download.extract`.
#[derive(Debug, Clone)]
pub struct ExtractTemplates {
    /// `to`: where the archives' files go.
    pub to: Tpl,
    /// `accept_partial`: whether an incomplete export is kept as a partial result.
    pub accept_partial: Option<Tpl>,
}

impl DownloadAction {
    /// Compiles the templates of `spec`, found at model path `at` (`steps[2].download`).
    pub fn of(at: &str, spec: &DownloadSpec) -> Result<Self, PlanError> {
        let value = |field: &str, v: &Option<serde_json::Value>| {
            v.as_ref()
                .map(|v| tpl_value(&format!("{at}.{field}"), v))
                .transpose()
        };
        Ok(DownloadAction {
            urls: tpl_value(&format!("{at}.urls"), &spec.urls)?,
            names: value("names", &spec.names)?,
            to: tpl(&format!("{at}.to"), &spec.to)?,
            sha256: value("sha256", &spec.sha256)?,
            md5: value("md5", &spec.md5)?,
            size: value("size", &spec.size)?,
            request_id: opt_tpl(&format!("{at}.request_id"), spec.request_id.as_ref())?,
            extract: spec
                .extract
                .as_ref()
                .map(|x| {
                    Ok::<_, PlanError>(ExtractTemplates {
                        to: tpl(&format!("{at}.extract.to"), &x.to)?,
                        accept_partial: opt_tpl(
                            &format!("{at}.extract.accept_partial"),
                            x.accept_partial.as_ref(),
                        )?,
                    })
                })
                .transpose()?,
            spec: spec.clone(),
        })
    }
}

impl Deref for DownloadAction {
    type Target = DownloadSpec;
    fn deref(&self) -> &DownloadSpec {
        &self.spec
    }
}

/// A `decrypt` step: its spec, and its templates compiled (the fields of the same names).
#[derive(Debug, Clone)]
pub struct DecryptAction {
    /// The step as written; its non-template fields are read through [`Deref`].
    pub spec: DecryptSpec,
    /// `files`: the encrypted files (a list or one path).
    pub files: TplValue,
    /// `key`: the secret key file.
    pub key: Tpl,
    /// `passphrase`: the key's passphrase.
    pub passphrase: Option<Tpl>,
    /// `to`: the directory of the decrypted files.
    pub to: Tpl,
    /// `custodian`: whose mail the files hold.
    pub custodian: Option<Tpl>,
}

impl DecryptAction {
    /// Compiles the templates of `spec`, found at model path `at` (`steps[3].decrypt`).
    pub fn of(at: &str, spec: &DecryptSpec) -> Result<Self, PlanError> {
        Ok(DecryptAction {
            files: tpl_value(&format!("{at}.files"), &spec.files)?,
            key: tpl(&format!("{at}.key"), &spec.key)?,
            passphrase: opt_tpl(&format!("{at}.passphrase"), spec.passphrase.as_ref())?,
            to: tpl(&format!("{at}.to"), &spec.to)?,
            custodian: opt_tpl(&format!("{at}.custodian"), spec.custodian.as_ref())?,
            spec: spec.clone(),
        })
    }
}

impl Deref for DecryptAction {
    type Target = DecryptSpec;
    fn deref(&self) -> &DecryptSpec {
        &self.spec
    }
}
