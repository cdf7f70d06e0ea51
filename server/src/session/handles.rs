//! A session's open files for `fs/open`, `fs/readBlock` and `fs/close` (docs/protocol.md
//! §0, revision 2026-08). Handles belong to the session, not to the connection: a
//! resumed session keeps them, and destroying the session closes them all.
//!
//! A handle is an `Arc<File>`: a read in flight keeps its file open even if the handle is
//! closed meanwhile, and the descriptor is closed when the last holder lets go. Reads are
//! positional (`pread`), so concurrent reads of one handle share no cursor.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::limits::LimitReached;

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error("handle {0:?} is already open in this session")]
    Duplicate(String),
    #[error(transparent)]
    LimitReached(#[from] LimitReached),
    #[error("the session was destroyed")]
    Destroyed,
}

pub struct HandleTable {
    max_open: usize,
    /// `None` once the session is destroyed: nothing opens any more.
    files: Mutex<Option<HashMap<String, Arc<File>>>>,
}

impl HandleTable {
    pub fn new(max_open: usize) -> Self {
        Self {
            max_open,
            files: Mutex::new(Some(HashMap::new())),
        }
    }

    fn files(&self) -> MutexGuard<'_, Option<HashMap<String, Arc<File>>>> {
        self.files
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Whether `handle_id` could be opened now (not taken, under the cap). A check made
    /// before the file is opened so that a refused request touches no file; `insert`
    /// checks again.
    pub fn check_free(&self, handle_id: &str) -> Result<(), HandleError> {
        let files = self.files();
        let files = files.as_ref().ok_or(HandleError::Destroyed)?;
        self.check(files, handle_id)
    }

    fn check(
        &self,
        files: &HashMap<String, Arc<File>>,
        handle_id: &str,
    ) -> Result<(), HandleError> {
        if files.contains_key(handle_id) {
            return Err(HandleError::Duplicate(handle_id.to_owned()));
        }
        if files.len() >= self.max_open {
            return Err(LimitReached::OpenHandles {
                value: self.max_open,
            }
            .into());
        }
        Ok(())
    }

    /// Registers `file` under `handle_id`; on error the file is closed.
    pub fn insert(&self, handle_id: &str, file: File) -> Result<(), HandleError> {
        let mut files = self.files();
        let files = files.as_mut().ok_or(HandleError::Destroyed)?;
        self.check(files, handle_id)?;
        files.insert(handle_id.to_owned(), Arc::new(file));
        Ok(())
    }

    pub fn get(&self, handle_id: &str) -> Option<Arc<File>> {
        self.files().as_ref()?.get(handle_id).cloned()
    }

    /// Forgets the handle; whether it was open.
    pub fn remove(&self, handle_id: &str) -> bool {
        self.files()
            .as_mut()
            .and_then(|files| files.remove(handle_id))
            .is_some()
    }

    /// Closes every handle and refuses new ones (the session is destroyed).
    pub fn close_all(&self) {
        let files = self.files().take();
        drop(files);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.files().as_ref().map_or(0, HashMap::len)
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> File {
        File::open("/dev/null").expect("open /dev/null")
    }

    #[test]
    fn ids_are_unique_capped_and_freed_by_close() {
        let table = HandleTable::new(2);
        table.insert("a", file()).expect("first");
        assert!(matches!(
            table.insert("a", file()),
            Err(HandleError::Duplicate(_))
        ));
        table.insert("b", file()).expect("second");
        assert!(matches!(
            table.check_free("c"),
            Err(HandleError::LimitReached(LimitReached::OpenHandles {
                value: 2
            }))
        ));
        assert!(table.remove("a"));
        assert!(!table.remove("a"), "closing twice is no error, and no-op");
        table.insert("c", file()).expect("room again");
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_closed_table_closes_its_files_and_opens_nothing() {
        let table = HandleTable::new(8);
        table.insert("a", file()).expect("insert");
        let held = table.get("a").expect("open");
        table.close_all();
        assert!(table.get("a").is_none());
        assert_eq!(Arc::strong_count(&held), 1, "the table let go of it");
        assert!(matches!(
            table.insert("b", file()),
            Err(HandleError::Destroyed)
        ));
        assert!(table.is_empty());
    }
}
