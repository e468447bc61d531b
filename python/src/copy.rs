//! Copies: `copy_to` (head or snapshot, thin), `deep_copy_to` (with snapshots), `sparsify`.

use pyo3::prelude::*;

use crate::image::Image;
use crate::pool::Pool;
use crate::progress::CancelToken;
use crate::util::image_options;

#[pymethods]
impl Image {
    /// Copies this handle's state (its snapshot or head, no snapshots) into a new image
    /// ``name`` of ``dest``. Zero chunks of ``sparse_size`` bytes are skipped (0: only whole
    /// zero objects). Progress as for flatten; Pacific finishes the copy before honouring a
    /// cancel, which then raises OperationCanceled with the copy in place.
    #[pyo3(signature = (dest, name, order=None, features=None, stripe_unit=None, stripe_count=None, data_pool=None, sparse_size=4096, on_progress=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn copy_to(
        &self,
        py: Python<'_>,
        dest: &Pool,
        name: String,
        order: Option<u8>,
        features: Option<u64>,
        stripe_unit: Option<u64>,
        stripe_count: Option<u64>,
        data_pool: Option<String>,
        sparse_size: usize,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        let o = image_options(order, features, stripe_unit, stripe_count, data_pool.as_deref());
        let dest = &dest.inner;
        self.with_progress(py, on_progress, cancel, move |i, p| i.copy_to(dest, &name, &o, sparse_size, p))
    }

    /// Copies the image with all of its snapshots into ``name`` of ``dest`` (``rbd deep cp``);
    /// ``flatten`` makes a clone's copy independent of the parent.
    #[pyo3(signature = (dest, name, order=None, features=None, stripe_unit=None, stripe_count=None, data_pool=None, flatten=false, on_progress=None, cancel=None))]
    #[allow(clippy::too_many_arguments)]
    fn deep_copy_to(
        &self,
        py: Python<'_>,
        dest: &Pool,
        name: String,
        order: Option<u8>,
        features: Option<u64>,
        stripe_unit: Option<u64>,
        stripe_count: Option<u64>,
        data_pool: Option<String>,
        flatten: bool,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        let mut o = image_options(order, features, stripe_unit, stripe_count, data_pool.as_deref());
        if flatten {
            o.flatten(true);
        }
        let dest = &dest.inner;
        self.with_progress(py, on_progress, cancel, move |i, p| i.deep_copy_to(dest, &name, &o, p))
    }

    /// Deallocates every ``sparse_size``-aligned chunk that reads as zeros (a power of two,
    /// at least 4096).
    #[pyo3(signature = (sparse_size=4096, on_progress=None, cancel=None))]
    fn sparsify(
        &self,
        py: Python<'_>,
        sparse_size: usize,
        on_progress: Option<&Bound<'_, PyAny>>,
        cancel: Option<&Bound<'_, CancelToken>>,
    ) -> PyResult<()> {
        self.with_progress(py, on_progress, cancel, move |i, p| i.sparsify(sparse_size, p))
    }
}
