//! The recipe engine: ordered steps, each paired with its undo.
//!
//! A step runs; when it succeeds its undo is recorded. When a later step fails (or the recipe
//! is dropped without [`Saga::commit`], for example by a panic), the recorded undos run in
//! reverse order. The original error is returned with the recipe and step names; undo
//! failures are attached to it, never substituted for it. Each step checks the failpoint
//! `<recipe>.<step>` first and runs inside a `tracing` span.
//!
//! ```
//! use rbd_core::recipes::saga::Saga;
//! use std::cell::RefCell;
//! let log = RefCell::new(Vec::new());
//! let mut s = Saga::new("demo");
//! s.step("a", || { log.borrow_mut().push("a"); Ok(()) }, || { log.borrow_mut().push("undo a"); Ok(()) }).unwrap();
//! let e = s.step("b", || Err::<(), _>(rbd_core::Error::invalid("b", "nope")), || Ok(())).unwrap_err();
//! assert_eq!(e.recipe_step(), Some(("demo", "b")));
//! assert_eq!(*log.borrow(), vec!["a", "undo a"]);
//! ```

use crate::error::{Error, Result};
use crate::recipes::failpoint;

type Undo<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// A running recipe: completed steps and their undos.
pub struct Saga<'a> {
    recipe: &'static str,
    done: Vec<(&'static str, Undo<'a>)>,
    finished: bool,
}

impl<'a> Saga<'a> {
    /// Starts recipe `recipe` (e.g. `"glance.upload"`).
    pub fn new(recipe: &'static str) -> Saga<'a> {
        Saga { recipe, done: Vec::new(), finished: false }
    }

    /// The recipe name.
    pub fn recipe(&self) -> &'static str {
        self.recipe
    }

    /// Names of the steps completed so far.
    pub fn completed(&self) -> Vec<&'static str> {
        self.done.iter().map(|(n, _)| *n).collect()
    }

    /// Runs step `name`; on success records `undo`. On failure undoes everything completed and
    /// returns the step's error, annotated with the recipe and step (and any undo errors).
    ///
    /// # Errors
    /// The step's error (or an injected failpoint error), with [`Error::recipe_step`] set.
    pub fn step<T>(
        &mut self,
        name: &'static str,
        run: impl FnOnce() -> Result<T>,
        undo: impl FnOnce() -> Result<()> + 'a,
    ) -> Result<T> {
        let span = tracing::info_span!("step", recipe = self.recipe, step = name);
        let _g = span.enter();
        let r = failpoint::check(&format!("{}.{name}", self.recipe)).and_then(|()| run());
        match r {
            Ok(v) => {
                self.done.push((name, Box::new(undo)));
                Ok(v)
            }
            Err(e) => Err(self.fail(name, e)),
        }
    }

    /// A step with nothing to undo (reads, checks, data writes into an image a previous step
    /// created and will remove).
    ///
    /// # Errors
    /// As [`Saga::step`].
    pub fn check<T>(&mut self, name: &'static str, run: impl FnOnce() -> Result<T>) -> Result<T> {
        self.step(name, run, || Ok(()))
    }

    /// Fails the recipe from outside a step (e.g. a validation after a step): undoes and
    /// annotates `e` with step `name`.
    pub fn fail(&mut self, name: &'static str, e: Error) -> Error {
        tracing::warn!(recipe = self.recipe, step = name, error = %e, "step failed; undoing");
        let undo_errors = self.undo_all();
        self.finished = true;
        e.in_recipe(self.recipe, name, undo_errors)
    }

    /// Finishes the recipe: nothing will be undone. Checks the `<recipe>.commit` failpoint.
    ///
    /// # Errors
    /// Only an injected failpoint error (after which everything is undone).
    pub fn commit(mut self) -> Result<()> {
        if let Err(e) = failpoint::check(&format!("{}.commit", self.recipe)) {
            return Err(self.fail("commit", e));
        }
        self.finished = true;
        self.done.clear();
        Ok(())
    }

    fn undo_all(&mut self) -> Vec<Error> {
        let mut errs = Vec::new();
        while let Some((name, undo)) = self.done.pop() {
            let _g = tracing::info_span!("undo", recipe = self.recipe, step = name).entered();
            if let Err(e) = undo() {
                tracing::warn!(recipe = self.recipe, step = name, error = %e, "undo failed");
                errs.push(e.in_recipe(self.recipe, name, Vec::new()));
            }
        }
        errs
    }
}

impl Drop for Saga<'_> {
    fn drop(&mut self) {
        if !self.finished && !self.done.is_empty() {
            tracing::warn!(recipe = self.recipe, "recipe dropped before commit; undoing");
            let _ = self.undo_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use std::cell::RefCell;

    #[test]
    fn undo_in_reverse_and_keep_original_error() {
        let log = RefCell::new(Vec::new());
        let log_ref = &log;
        let mut s = Saga::new("t");
        for n in ["a", "b"] {
            s.step(
                n,
                || Ok(()),
                move || {
                    log_ref.borrow_mut().push(n);
                    if n == "b" {
                        Err(Error::invalid("undo", "undo b failed"))
                    } else {
                        Ok(())
                    }
                },
            )
            .unwrap();
        }
        let e = s.step("c", || Err::<(), _>(Error::new(ErrorKind::NoSpace, "write", "full")), || Ok(())).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NoSpace, "original error kept");
        assert_eq!(e.recipe_step(), Some(("t", "c")));
        assert_eq!(e.undo_errors().len(), 1);
        assert_eq!(*log.borrow(), vec!["b", "a"]);
        assert!(e.to_string().contains("undo"), "{e}");
    }

    #[test]
    fn drop_without_commit_undoes() {
        let log = RefCell::new(0);
        {
            let mut s = Saga::new("t");
            s.step(
                "a",
                || Ok(()),
                || {
                    *log.borrow_mut() += 1;
                    Ok(())
                },
            )
            .unwrap();
        }
        assert_eq!(*log.borrow(), 1);
        let mut s = Saga::new("t");
        s.step(
            "a",
            || Ok(()),
            || {
                *log.borrow_mut() += 1;
                Ok(())
            },
        )
        .unwrap();
        s.commit().unwrap();
        assert_eq!(*log.borrow(), 1, "commit keeps the work");
    }

    #[test]
    fn failpoint_fails_the_step_before_it_runs() {
        failpoint::set("fp-test.b", failpoint::Action::Error);
        let ran = RefCell::new(false);
        let undone = RefCell::new(false);
        let mut s = Saga::new("fp-test");
        s.step(
            "a",
            || Ok(()),
            || {
                *undone.borrow_mut() = true;
                Ok(())
            },
        )
        .unwrap();
        let e = s
            .step(
                "b",
                || {
                    *ran.borrow_mut() = true;
                    Ok(())
                },
                || Ok(()),
            )
            .unwrap_err();
        failpoint::clear("fp-test.b");
        assert!(!*ran.borrow());
        assert!(*undone.borrow());
        assert!(e.to_string().contains("injected failure at fp-test.b"));
    }
}
