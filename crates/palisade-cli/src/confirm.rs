//! Confirmation of destructive commands: asked on a terminal, refused without one unless
//! `--yes` was given.

use std::io::{self, BufRead, IsTerminal, Write};

use crate::error::CliError;

/// Goes ahead when `yes` (`--yes`) is set; otherwise asks `question` on the terminal. Without
/// a terminal on stdin it refuses (exit 2) and says to pass `--yes`; an answer other than `y`
/// or `yes` stops the command (exit 1), nothing changed.
pub fn confirm(question: &str, yes: bool) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let stdin = io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(format!(
            "{question}? Not without confirmation, and stdin is not a terminal to ask on: pass \
             --yes to go ahead"
        )));
    }
    let mut err = io::stderr().lock();
    write!(err, "{question}? [y/N] ")?;
    err.flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if answer_is_yes(&answer) {
        Ok(())
    } else {
        Err(CliError::NotDone(
            "not confirmed: nothing was changed".into(),
        ))
    }
}

/// Whether a typed answer means yes.
fn answer_is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y", "Y\n", " yes \r\n"] {
            assert!(answer_is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yess", "ok"] {
            assert!(!answer_is_yes(no), "{no:?}");
        }
    }

    #[test]
    fn yes_skips_the_question() {
        assert!(confirm("purge queue 'q'", true).is_ok());
    }
}
