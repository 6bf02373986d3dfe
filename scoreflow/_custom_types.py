"""Shape-annotated type aliases, defined once for the whole package."""

from typing import TypeAlias

from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree


Scalar: TypeAlias = Float[Array, ""]
ScalarLike: TypeAlias = float | Float[ArrayLike, ""]
Data: TypeAlias = Float[Array, "*data"]  # one example, any shape (vector or C H W image)
Key: TypeAlias = PRNGKeyArray
Conditioning: TypeAlias = PyTree | None

__all__ = ["Array", "ArrayLike", "Float", "PyTree", "Scalar", "ScalarLike", "Data", "Key", "Conditioning"]
