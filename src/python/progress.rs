//! Progress callbacks: `progress(done, total)`, called from work that runs with the GIL
//! released (the GIL is taken back for each call). A callback that raises is not called again,
//! and its exception is raised when the work is over (what was done stays done: an index
//! build commits what it indexed).

use pyo3::prelude::*;
use std::sync::Mutex;

/// An optional Python callable and the first exception it raised.
pub(super) struct Progress {
    callback: Option<Py<PyAny>>,
    error: Mutex<Option<PyErr>>,
}

impl Progress {
    /// Wraps `callback` (`None`: no reporting); refuses what cannot be called.
    pub(super) fn new(callback: Option<Bound<'_, PyAny>>) -> PyResult<Self> {
        if let Some(cb) = &callback {
            if !cb.is_callable() {
                return Err(super::errors::invalid(
                    "progress must be a callable taking (done, total)",
                ));
            }
        }
        Ok(Progress {
            callback: callback.map(Bound::unbind),
            error: Mutex::new(None),
        })
    }

    /// Calls the callback with `(done, total)`, unless an earlier call raised.
    pub(super) fn report(&self, done: usize, total: usize) {
        let Some(cb) = &self.callback else { return };
        let Ok(mut error) = self.error.lock() else {
            return;
        };
        if error.is_some() {
            return;
        }
        if let Err(e) = Python::attach(|py| cb.call1(py, (done, total)).map(drop)) {
            *error = Some(e);
        }
    }

    /// The callback's exception, if it raised.
    pub(super) fn finish(self) -> PyResult<()> {
        match self.error.into_inner() {
            Ok(Some(e)) => Err(e),
            _ => Ok(()),
        }
    }
}
