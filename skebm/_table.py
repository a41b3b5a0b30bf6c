"""Tables as data scientists have them: categorical columns and missing cells.

A :class:`TableColumns`, fitted to the training table, says which columns are
categorical and what their categories are. It encodes a table (a numpy array
or a pandas DataFrame, NaN, None and ``pd.NA`` marking missing cells) as one
float64 array, the form every row container and model of skebm takes:
numeric columns as they are, a categorical column as the code ``0 .. K-1`` of
its category, a missing cell as NaN. It decodes drawn rows back, categories
as they came (strings stay strings).

Which columns are categorical (``categorical_features``), in the style of
:class:`~sklearn.ensemble.HistGradientBoostingClassifier`:

- ``"from_dtype"``: the DataFrame columns of a category, object, string or
  bool dtype;
- ``"auto"``: those, and numeric columns of 2 to :data:`AUTO_MAX_LEVELS`
  distinct values, each in at least 5% of the rows and in at least
  :data:`AUTO_LEAST_COUNT` of them (a flag or a year of three has no
  density, only a probability for each value);
- indices, a boolean mask, or column names; None for none.

Which numeric columns hold integers (``integer_features``), whose model is a
probability per integer (the density's mass over the unit cell centred on
it): ``"auto"``, the columns not categorical whose observed values in fit are
all integers; or indices, a boolean mask, column names; None for none.
"""

import decimal
import numbers
import warnings

import numpy as np

__all__ = ["TableColumns", "UnseenCategoryError", "blanked", "is_number", "missing_cells",
           "numbers_only"]

#: ``categorical_features="auto"``: a numeric column of 2 to this many
#: distinct values, each in at least this share of the rows and in at least
#: this many rows, is categorical. On a small table the count rules: the 10
#: training rows of statsmodels' stackloss hold its air flow at five values,
#: two rows each, and a held-out row brings a sixth.
AUTO_MAX_LEVELS = 5
AUTO_LEAST_SHARE = 0.05
AUTO_LEAST_COUNT = 10
#: A continuous column whose commonest value holds at least this share of
#: its observed cells, this many times the next commonest value's and at
#: least :data:`AUTO_LEAST_COUNT` cells (not a small table's tie), has a
#: point mass between its ends, modelled as a cell of its own
#: (:meth:`TableColumns.fit`). Iris's most repeated measurement holds 19%
#: of its column; diabetes' cholesterol ratio, rounded to whole numbers in
#: most rows, is 3 in 29%, beside 4 in 24%: rounding, not a point mass.
POINT_MASS_SHARE = 0.3
POINT_MASS_LEAD = 2.0
#: A column's least or greatest value is a point mass (an amount that is
#: often exactly 0), modelled as a censored value (:meth:`TableColumns.fit`),
#: where it holds at least this share of the observed cells,
#: :data:`POINT_MASS_LEAD` times as many as any value between the ends and
#: at least :data:`AUTO_LEAST_COUNT`: the end of a measurement's range is no
#: commoner than its other values, a floor or a ceiling is (Fair's affairs
#: are 0 in 68% of the rows, the next value in 2%).
END_POINT_SHARE = 0.1
#: A continuous column of at most this many distinct values, with at least
#: :data:`AUTO_LEAST_COUNT` rows a value, is a code (ages in brackets, 17.5,
#: 22, 27, ...), which a density can only put spikes on: ``fit`` warns.
FEW_VALUES = 10
#: A categorical column is an identifier (a name, a date as text) to
#: ``fit``, which warns, where categories seen once fill this share of its
#: observed cells: a new row then nearly always brings an unseen one.
IDENTIFIER_SHARE = 0.5
#: A drawn value within this many of its column's standard deviations of an
#: inner point mass is the point: the model works in float32 on standardized
#: values, where the point comes back within about 1e-7 of them.
INNER_POINT_REACH = 1e-5


def _is_frame(X):
    return hasattr(X, "columns") and hasattr(X, "dtypes")


def _non_numeric(dtype):
    """Whether a pandas (or numpy) dtype holds categories rather than numbers."""
    return not (np.issubdtype(np.dtype(dtype), np.number)
                if isinstance(dtype, np.dtype) else _numeric_extension(dtype))


def _numeric_extension(dtype):
    import pandas as pd  # only reached with a DataFrame, so pandas is there
    return (pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype)
            and not isinstance(dtype, pd.CategoricalDtype))


def missing_cells(values):
    """Where an array of any shape (float or object) holds NaN, None or
    pandas' NA; pandas is not needed for numpy input."""
    if values.dtype != object:
        return np.isnan(values)
    return np.frompyfunc(_is_missing, 1, 1)(values).astype(bool)


def _is_missing(value):
    return (value is None or type(value).__name__ == "NAType"
            or (isinstance(value, numbers.Real) and value != value))


def _column_name(names, j):
    """Column ``j`` as messages name it: its DataFrame name, else its index."""
    return f"{names[j]!r}" if names is not None else f"{j}"


def _columns_of(X):
    """``(columns, dtypes)``: the columns of a table as 1-D numpy arrays
    (float64, or object for non-numeric ones) and the dtypes they came with.

    Every table, at fit and after, comes in here, so here an infinite number
    is refused, in whatever column (see :func:`_refuse_infinite`)."""
    if _is_frame(X):
        columns = []
        for name, dtype in zip(X.columns, X.dtypes):
            series = X[name]
            _refuse_odd_numbers(name, dtype)
            if _non_numeric(dtype):
                column = np.asarray(series.astype(object), dtype=object)
                # Numbers in a column of objects (a row taken by df.iloc[i]) are numbers.
                columns.append(_as_numbers(column) if dtype == object else column)
            else:
                columns.append(np.asarray(series.astype("float64").to_numpy(na_value=np.nan),
                                          dtype=np.float64))
        _refuse_infinite(columns, np.asarray(X.columns, dtype=object))
        return columns, list(X.dtypes)
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D table, got an array of shape {X.shape}.")
    if X.dtype.kind in "US":
        # numpy made every cell of mixed rows a string: a column whose every
        # cell reads as a number is numbers.
        columns = [_parsed_numbers(X[:, j].astype(object)) for j in range(X.shape[1])]
    elif X.dtype == object:  # strings given as strings are text
        columns = [_as_numbers(X[:, j]) for j in range(X.shape[1])]
    else:
        X = X.astype(np.float64, copy=False) if X.dtype.kind in "biuf" else X
        columns = [X[:, j] for j in range(X.shape[1])]
    _refuse_infinite(columns, None)
    return columns, [column.dtype for column in columns]


def _shown(value):
    """A category as a message shows it: a whole number of a numeric column
    (a year, a flag) without its float's ".0"."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    return value


def _refuse_odd_numbers(name, dtype):
    """Refuse a column of durations or complex numbers, which numpy counts
    as numbers but a float cannot hold whole."""
    kind = dtype.kind if isinstance(dtype, np.dtype) else None
    if kind in ("m", "c"):
        what, advice = (("durations", "a duration to a number, e.g. hours") if kind == "m" else
                        ("complex numbers", "its real and imaginary parts to two columns"))
        raise TypeError(f"Column {name!r} holds {what} ({dtype}). Convert the column first "
                        f"({advice}).")


def _refuse_infinite(columns, names):
    """An error naming the first column that holds +inf or -inf, continuous
    or categorical (``"auto"`` would otherwise make ``inf`` a category, and
    no density scores it). NaN stays: it marks a missing cell."""
    for j, column in enumerate(columns):
        infinite = (np.isinf(column) if column.dtype != object
                    else np.frompyfunc(_is_infinite, 1, 1)(column).astype(bool))
        if infinite.any():
            rows = np.flatnonzero(infinite)
            raise ValueError(
                f"Column {_column_name(names, j)} holds infinity (+inf or -inf) in "
                f"{len(rows)} of {len(column)} rows, the first at row {rows[0]}: every value "
                "must be finite, or NaN where the cell is missing.")


def _is_infinite(value):
    return isinstance(value, numbers.Real) and (value == np.inf or value == -np.inf)


def _parsed_numbers(column):
    """A column of strings as float64 when every one reads as a number;
    else as it is."""
    try:
        return column.astype(np.float64)
    except (TypeError, ValueError):
        return column


def _as_numbers(column):
    """An object column as float64 (NaN where missing) when every value is a
    number or missing; else as it is: text, a string of digits included
    (a zip code is no number), and booleans (categories, see
    :func:`is_number`)."""
    if not numbers_only(column):
        return column
    return np.where(missing_cells(column), np.nan, column).astype(np.float64)


def numbers_only(values):
    """Whether every cell of an object array is a number (:func:`is_number`)
    or missing (NaN, None, pandas' NA)."""
    return all(_is_missing(value) or is_number(value) for value in values.ravel())


def is_number(value):
    """Whether a cell is a number: a Decimal is; a string of digits is text;
    a bool is a category, as a bool column of a DataFrame is (``"from_dtype"``),
    so a column of True, False and None keeps its values and dtype where it
    would become 0.0 and 1.0 (and a mean such as 0.4 where filled)."""
    return (isinstance(value, (numbers.Real, decimal.Decimal))
            and not isinstance(value, (bool, np.bool_)))


def blanked(X, mask):
    """X (an array, a DataFrame) with the cells ``mask`` marks made missing,
    whatever they held (a placeholder, an infinity). A mask that is not a
    boolean array of X's shape leaves X as it is, for the caller's error."""
    mask = np.asarray(mask)
    if mask.dtype != bool or hasattr(X, "tocsr") or mask.shape != np.shape(X):
        return X
    if hasattr(X, "columns") and hasattr(X, "mask"):  # a DataFrame
        return X.mask(mask)
    X = np.asarray(X)
    if X.dtype.kind in "biuf":
        return np.where(mask, np.nan, X.astype(np.float64, copy=False))
    X = X.astype(object)
    X[mask] = None
    return X


def _few_common_values(values):
    """Whether a numeric column is, to ``"auto"``, a category: 2 to
    :data:`AUTO_MAX_LEVELS` distinct values, each in at least
    :data:`AUTO_LEAST_SHARE` of the rows and in at least
    :data:`AUTO_LEAST_COUNT` (a flag, a year of three). Sparse counts
    (mostly 0, a rare 1 or 2), and a few values each seen in a few rows of
    a small table, are no categories (a held-out row would bring values fit
    never saw), but integer or continuous columns."""
    levels, counts = np.unique(values, return_counts=True)
    return (2 <= len(levels) <= AUTO_MAX_LEVELS
            and counts.min() >= max(AUTO_LEAST_SHARE * len(values), AUTO_LEAST_COUNT))


def _integers_only(column):
    """Whether a numeric column's observed values are all integers, within
    the range where floats can hold fractions (beyond 2**53 every float is
    a whole number, and says nothing)."""
    if column.dtype == object:
        return False
    observed = column[~np.isnan(column)]
    return (bool(len(observed)) and bool(np.all(np.abs(observed) < 2.0**53))
            and bool(np.all(observed == np.round(observed))))


class UnseenCategoryError(ValueError):
    """A value the model gives probability 0, in the rows ``rows`` (a
    boolean mask): a category not seen in fit, a value that is not an
    integer in an integer column (a probability per integer puts none
    between them), or a value so far from the training data that float64
    cannot hold its log-density. An outlier detector flags those rows; a
    likelihood or an imputation cannot use them."""

    def __init__(self, message, rows):
        super().__init__(message)
        self.rows = rows

    def __reduce__(self):  # pickled (joblib's workers) with its rows
        return type(self), (self.args[0], self.rows)


def _codes(known, values):
    """``(codes, unseen)``: the code of each value among the sorted
    categories ``known``, and where a value is none of them. A value of
    another type than the categories (a number where strings were fitted,
    or a string where numbers were) is unseen, not a TypeError of the sort."""
    if not len(values):
        return np.zeros(0, dtype=int), np.zeros(0, dtype=bool)
    try:
        codes = np.minimum(np.searchsorted(known, values), len(known) - 1)
        return codes, np.asarray(known[codes] != values, dtype=bool)
    except TypeError:  # types that do not compare: look each value up
        index = {category: code for code, category in enumerate(known.tolist())}
        codes = np.array([_lookup(index, value) for value in values], dtype=int)
        unseen = codes < 0
        return np.where(unseen, 0, codes), unseen


def _lookup(index, value):
    try:
        return index.get(value, -1)
    except TypeError:  # unhashable: no category
        return -1


class TableColumns:
    """Which columns of a table are categorical, their categories, and the
    encoding to (and from) a float64 array of values and codes.

    Parameters
    ----------
    is_categorical : ndarray of bool, shape (n_features,)
    categories : list of ndarray
        The sorted categories of each categorical column, in column order.
    names : ndarray of str or None
        The DataFrame's column names, for messages.
    is_integer : ndarray of bool, shape (n_features,) or None
        The numeric columns of integers (None: none).
    dtypes : list or None
        The fitted DataFrame's column dtypes, which decoded rows take back
        (None: not a DataFrame).
    is_found : ndarray of bool, shape (n_features,) or None
        The categorical columns that ``"auto"`` found among numeric ones (a
        flag, a year of three): numbers to the user, so their conditional
        mean is a number, the mean of their values, where a category the
        user named gets its most probable value (None: none).
    censored : ndarray of float, shape (n_features, 2) or None
        Each continuous column's point mass at its least value (first
        entry) or its greatest (second), -inf and inf where it has none
        (None: no column has one). The column is modelled as censored
        there: see :meth:`fit`.
    inner : ndarray of float, shape (n_features,) or None
        Each continuous column's point mass between its least and greatest
        values, NaN where it has none (None: no column has one); see
        :meth:`fit`.
    """

    def __init__(self, is_categorical, categories, names=None, is_integer=None, dtypes=None,
                 is_found=None, censored=None, inner=None):
        self.is_categorical = np.asarray(is_categorical, dtype=bool)
        self.categories = categories
        self.names = names
        self.dtypes = dtypes
        self.is_integer = np.asarray(is_integer if is_integer is not None
                                     else np.zeros_like(self.is_categorical), dtype=bool)
        self.is_found = np.asarray(is_found if is_found is not None
                                   else np.zeros_like(self.is_categorical), dtype=bool)
        self.censored = censored
        self.inner = inner
        # How near an inner point a drawn value is at it (set by fit).
        self.inner_reach = np.zeros(len(self.is_categorical))

    @classmethod
    def fit(cls, X, categorical_features, integer_features=None, owner="The model"):
        """Resolve ``categorical_features`` and ``integer_features`` on the
        training table ``X`` and collect each categorical column's categories
        (missing cells left out); find the continuous columns with a point
        mass, and warn, in the name of ``owner``, of codes.

        A point mass at a column's least value (an amount that is often
        exactly 0) is read as a censored value, as in a Tobit model [1]_:
        the model's density of the column goes on below it, and its mass
        there is the point's probability; a draw there is put on the point.
        So a row at the point scores the probability of its point times the
        density of its other cells, and no draw lies beyond it. Likewise at
        the greatest value. A point mass between a column's ends is the same
        idea inside the column: the model's line gets a cell inserted just
        above the point, whose mass is the point's probability, and the
        column's values above the point are moved up by the cell; a draw in
        the cell is put on the point.

        References
        ----------
        .. [1] Tobin, J. "Estimation of relationships for limited dependent
           variables." Econometrica 26(1), 1958.
        """
        columns, dtypes = _columns_of(X)
        names = np.asarray(X.columns, dtype=object) if _is_frame(X) else None
        mask = cls._resolve(categorical_features, columns, dtypes, names)
        found = (mask & np.array([column.dtype != object for column in columns], dtype=bool)
                 if isinstance(categorical_features, str) and categorical_features == "auto"
                 else None)
        table = cls(mask, [], names, dtypes=dtypes if names is not None else None,
                    is_found=found)
        counts = []  # of each categorical column's categories
        for j in np.flatnonzero(mask):
            column = columns[j]
            observed = column[~missing_cells(column)]
            if observed.size == 0:
                raise ValueError(f"Column {table.name(j)} has no observed value; drop it.")
            odd = [v for v in observed if not isinstance(v, (str, numbers.Number, np.bool_))]
            if odd:
                raise TypeError(
                    f"Column {table.name(j)} holds {type(odd[0]).__name__} values; a cell's "
                    "argument must be a string or a number. Convert the "
                    "column first (a date to a number, e.g. days since a start, or to a string "
                    "category).")
            try:
                values, tallies = np.unique(observed, return_counts=True)
            except TypeError as error:
                raise ValueError(
                    f"Column {table.name(j)} mixes categories of different types "
                    f"({sorted({type(v).__name__ for v in observed})}); make them one type."
                ) from error
            table.categories.append(values)
            counts.append(tallies)
        for j in np.flatnonzero(~mask):
            if columns[j].dtype == object:
                raise ValueError(
                    f"Column {table.name(j)} is not numeric; mark it categorical "
                    "(categorical_features) or encode it.")
            if np.isnan(columns[j]).all():
                raise ValueError(f"Column {table.name(j)} has no observed value; drop it.")
        table.is_integer = table._integer_columns(integer_features, columns, dtypes)
        table._find_point_masses(columns, owner)
        table._warn_of_identifiers(counts, owner)
        return table

    def _warn_of_identifiers(self, counts, owner):
        """Warn, in the name of ``owner`` and one message, of the categorical
        columns (``counts``: the rows of each of their categories in fit)
        most of whose observed cells hold a category seen once
        (:data:`IDENTIFIER_SHARE`, and at least :data:`AUTO_LEAST_COUNT`
        cells): an identifier or a date as text, of which nearly every new
        row brings a category that fit never saw."""
        found = []
        for j, tallies in zip(np.flatnonzero(self.is_categorical), counts):
            once, cells = int((tallies == 1).sum()), int(tallies.sum())
            if once >= max(IDENTIFIER_SHARE * cells, AUTO_LEAST_COUNT):
                found.append(f"column {self.name(j)} has {len(tallies)} categories in "
                             f"{cells} cells, {once} of them seen once")
        if found:
            warnings.warn(
                f"{owner}: {'; '.join(found)}: an identifier, or dates or numbers written as "
                "text? Nearly every new row brings a category fit never saw, which scoring "
                "and completing refuse (UnseenCategoryError). Drop such a column, or convert "
                "it (a date to a number of days).", UserWarning)

    def _find_point_masses(self, columns, owner):
        """Set :attr:`censored` from the continuous columns' point masses at
        their ends (:data:`END_POINT_SHARE`) and :attr:`inner` from those
        between their ends (:data:`POINT_MASS_SHARE`), and warn, in one
        message, of columns of a few values (:data:`FEW_VALUES`): the rows
        there score a density's spike, not a probability."""
        censored = np.tile([-np.inf, np.inf], (len(columns), 1))
        inner, reach = np.full(len(columns), np.nan), np.zeros(len(columns))
        codes = []
        for j in np.flatnonzero(~self.is_categorical & ~self.is_integer):
            observed = columns[j][~np.isnan(columns[j])]
            values, counts = np.unique(observed, return_counts=True)  # values sorted
            between = counts[1:-1].max(initial=0)
            for end in sorted({0, len(values) - 1}):
                if counts[end] >= max(END_POINT_SHARE * len(observed), POINT_MASS_LEAD * between,
                                      AUTO_LEAST_COUNT):
                    censored[j, int(end > 0)] = values[end]
            commonest = counts.argmax()
            second = np.sort(counts)[-2] if len(counts) > 1 else 0
            if 0 < commonest < len(values) - 1 and counts[commonest] >= max(
                    POINT_MASS_SHARE * len(observed), POINT_MASS_LEAD * second, AUTO_LEAST_COUNT):
                inner[j] = values[commonest]  # no end can then be a point mass
                reach[j] = INNER_POINT_REACH * observed.std()
            elif (np.isinf(censored[j]).all() and len(values) <= FEW_VALUES
                  and len(observed) >= AUTO_LEAST_COUNT * len(values)):
                codes.append(f"column {self.name(j)} takes {len(values)} values")
        self.censored = censored if np.isfinite(censored).any() else None
        self.inner = inner if np.isfinite(inner).any() else None
        self.inner_reach = reach
        if codes:
            warnings.warn(
                f"{owner}: a continuous column takes only a few values, a code rather than a "
                f"measurement ({'; '.join(codes)}). A density can only put a spike on such a "
                "value: those rows score a density that grows as the spike narrows, not a "
                "probability. Mark a column of few values in categorical_features (user "
                "guide, 'Prepare the columns').", UserWarning)

    def _integer_columns(self, spec, columns, dtypes):
        """The mask of ``integer_features`` (after the categorical columns,
        which are never integer ones): named columns must hold integers."""
        integral = np.array([not self.is_categorical[j] and _integers_only(columns[j])
                             for j in range(len(columns))], dtype=bool)
        if isinstance(spec, str):  # "auto"
            return integral
        mask = self._resolve(spec, columns, dtypes, self.names, "integer_features")
        for j in np.flatnonzero(mask & ~integral):
            reason = ("is categorical" if self.is_categorical[j] else
                      "holds values that are not integers")
            raise ValueError(f"integer_features names column {self.name(j)}, which {reason}.")
        return mask

    @staticmethod
    def _resolve(spec, columns, dtypes, names, parameter="categorical_features"):
        n_features = len(columns)
        if spec is None:
            return np.zeros(n_features, dtype=bool)
        if isinstance(spec, str):
            mask = np.array([columns[j].dtype == object and _non_numeric(dtypes[j])
                             for j in range(n_features)], dtype=bool)
            if spec == "auto":
                for j in np.flatnonzero(~mask):
                    mask[j] = _few_common_values(columns[j][~np.isnan(columns[j])])
            return mask
        spec = np.asarray(spec)
        if spec.size == 0:  # an empty list: no such columns
            return np.zeros(n_features, dtype=bool)
        if spec.dtype == bool:
            if spec.shape != (n_features,):
                raise ValueError(f"{parameter} as a mask needs {n_features} entries, "
                                 f"got {spec.shape[0]}.")
            return spec.copy()
        mask = np.zeros(n_features, dtype=bool)
        if spec.dtype.kind in "OUS":
            if names is None:
                raise ValueError(f"{parameter} names columns, but X has no column "
                                 "names; give indices or a mask.")
            index = {str(name): j for j, name in enumerate(names)}
            unknown = [str(name) for name in spec if str(name) not in index]
            if unknown:
                raise ValueError(f"{parameter} names columns X lacks: {unknown}.")
            mask[[index[str(name)] for name in spec]] = True
            return mask
        if spec.dtype.kind not in "iu" or np.any(spec < 0) or np.any(spec >= n_features):
            raise ValueError(f"{parameter} must be column indices in "
                             f"[0, {n_features}), a boolean mask, names or 'auto', got {spec}.")
        mask[spec] = True
        return mask

    # ------------------------------------------------------------ queries
    @property
    def n_categories(self):
        """Number of categories of each categorical column."""
        return [len(values) for values in self.categories]

    @property
    def needs_encoding(self):
        return bool(self.is_categorical.any())

    def name(self, j):
        return _column_name(self.names, j)

    def is_numeric_output(self):
        """Whether decoded rows are all numbers (a float64 array)."""
        return all(values.dtype.kind in "biuf" for values in self.categories)

    # ----------------------------------------------------------- encoding
    def encode(self, X):
        """X as a float64 array: numbers, category codes, NaN where missing.

        A category not seen in fit, or a value that is not an integer in an
        integer column, is refused (:meth:`refuse_impossible`).
        """
        columns, _ = _columns_of(X)
        if len(columns) != len(self.is_categorical):
            raise ValueError(f"X has {len(columns)} features, the table was fitted with "
                             f"{len(self.is_categorical)}.")
        encoded = np.empty((len(columns[0]) if columns else 0, len(columns)), dtype=np.float64)
        unseen_rows, unseen_columns = np.zeros(len(encoded), dtype=bool), []
        categories = iter(self.categories)
        for j, column in enumerate(columns):
            if not self.is_categorical[j]:
                if column.dtype == object:
                    raise ValueError(f"Column {self.name(j)} was numeric in fit; it holds "
                                     "non-numeric values now.")
                encoded[:, j] = column
                continue
            known = next(categories)
            missing = missing_cells(column)
            values = column[~missing]
            if known.dtype.kind in "biuf" and values.dtype == object:
                try:
                    values = values.astype(np.float64)
                except (TypeError, ValueError):
                    pass
            codes, unseen = _codes(known, values)
            if np.any(unseen):
                unseen_rows[np.flatnonzero(~missing)[unseen]] = True
                unseen_columns.append((j, values[unseen][:1].tolist()[0], known))
            encoded[~missing, j] = codes
            encoded[missing, j] = np.nan
        self.refuse_impossible(encoded, unseen_rows, unseen_columns)
        return encoded

    def refuse_impossible(self, encoded, unseen_rows=None, unseen_columns=()):
        """Refuse the rows of ``encoded`` (values and codes) the model gives
        probability 0, which no likelihood or imputation can use: an
        :class:`UnseenCategoryError` that names each such column and a
        value, and holds every such row. They are the rows ``unseen_rows``
        with a category not seen in fit (``unseen_columns``: the column,
        value and categories of each, as :meth:`encode` found them), and
        those with a value that is not an integer in an integer column."""
        impossible = (np.zeros(len(encoded), dtype=bool) if unseen_rows is None
                      else unseen_rows.copy())
        problems = [f"column {self.name(j)} has a category not seen in fit: {_shown(value)!r} "
                    f"(seen: {[_shown(v) for v in known[:10].tolist()]})"
                    for j, value, known in unseen_columns[:1]]
        problems += [f"column {self.name(j)} too ({_shown(value)!r})"
                     for j, value, _ in unseen_columns[1:]]
        advice = (["map each category to a known one or refit with it. In cross-validation, "
                   "shuffle the rows (KFold(shuffle=True)): a table sorted by a column leaves "
                   "its categories out of training folds"] if unseen_columns else [])
        # getattr: a table pickled before is_found was kept has none.
        found = getattr(self, "is_found", np.zeros_like(self.is_categorical))
        numbers = [self.name(j) for j, _, _ in unseen_columns if found[j]]
        if numbers:
            advice.append(
                f"name the categorical columns in categorical_features (or pass None) to model "
                f"{', '.join(numbers)} as numbers: categorical_features='auto' took "
                f"{'them' if len(numbers) > 1 else 'it'} for categories, from few values in fit")
        not_integers = []
        for j in np.flatnonzero(self.is_integer):
            fractions = np.isfinite(encoded[:, j]) & (encoded[:, j] != np.round(encoded[:, j]))
            if fractions.any():
                impossible |= fractions
                not_integers.append(f"column {self.name(j)} holds integers (integer_features), "
                                    f"but {encoded[fractions, j][0].item()!r} is none")
        if not_integers:
            problems += not_integers
            advice.append("round each value of an integer column, or refit with the column "
                          "left out of integer_features (its default, 'auto', takes a column "
                          "whose values in fit were all whole numbers for integers, as a "
                          "column of fractions can be in a cross-validation fold, pixels "
                          "scaled to [0, 1] that were all 0 or 1 there; integer_features=None "
                          "models every numeric column as continuous)")
        if problems:
            message = "; ".join(problems)
            raise UnseenCategoryError(
                f"{message[0].upper()}{message[1:]}; {impossible.sum()} of {len(impossible)} "
                f"rows hold one. The model gives them probability 0; {'. Or '.join(advice)}.",
                impossible)

    def snapped(self, rows):
        """Drawn rows (values and codes) with their integer columns rounded
        to the integer whose cell the draw fell in, each draw beyond a
        point mass at an end (:attr:`censored`) put on it, and each draw
        that the model put on an inner point (:attr:`inner`), which comes
        back from the standardization within rounding of it, put on it
        exactly."""
        # getattr: a table pickled before censored (inner) was kept has none.
        censored, inner = getattr(self, "censored", None), getattr(self, "inner", None)
        if self.is_integer.any() or censored is not None or inner is not None:
            rows = rows.copy()
            rows[:, self.is_integer] = np.round(rows[:, self.is_integer])
            if censored is not None:
                rows = np.clip(rows, censored[:, 0], censored[:, 1])
            if inner is not None:
                rows = np.where(np.abs(rows - inner) <= self.inner_reach, inner, rows)
        return rows

    def mean_levels(self):
        """``{column: values}``: the columns whose conditional mean averages
        their categories' values (``is_found``), with those values."""
        # getattr: a table pickled before is_found was kept has none.
        found = getattr(self, "is_found", np.zeros_like(self.is_categorical))
        return {j: known.astype(np.float64) for j, known in
                zip(np.flatnonzero(self.is_categorical), self.categories) if found[j]}

    def decode(self, encoded, means=None):
        """Rows of values and codes back as the table they came from: a float64
        array when every category is a number, else a DataFrame (with the
        fitted column names, or 0, 1, ...). ``means``: a boolean array of
        ``encoded``'s shape, True at conditional means, which hold values
        already in the :meth:`mean_levels` columns."""
        if not self.needs_encoding:
            return encoded
        columns = [encoded[:, j] for j in range(encoded.shape[1])]
        valued = self.mean_levels() if means is not None else {}
        for j, known in zip(np.flatnonzero(self.is_categorical), self.categories):
            codes = np.clip(np.rint(np.nan_to_num(columns[j])), 0, len(known) - 1).astype(int)
            decoded = known[codes]
            if known.dtype.kind not in "biuf":
                decoded = decoded.astype(object)
                decoded[np.isnan(encoded[:, j])] = None
            else:
                decoded = np.where(np.isnan(encoded[:, j]), np.nan, decoded.astype(np.float64))
            if j in valued:
                decoded = np.where(means[:, j], encoded[:, j], decoded)
            columns[j] = decoded
        if self.is_numeric_output():
            return np.column_stack(columns).astype(np.float64) if columns else encoded
        try:
            import pandas as pd
        except ImportError:  # numpy in, numpy out: an object array
            return np.column_stack([column.astype(object) for column in columns])
        names = self.names if self.names is not None else range(len(columns))
        frame = pd.DataFrame({name: column for name, column in zip(names, columns)})
        # getattr: a table pickled before dtypes were kept has none.
        return _in_fitted_dtypes(frame, getattr(self, "dtypes", None))


def _in_fitted_dtypes(frame, dtypes):
    """``frame`` with each complete column in the dtype the fitted DataFrame
    gave it (``dtypes``; None: as it is): categories back to a pandas
    categorical, a string or a bool dtype, whole numbers back to an integer
    dtype. A column with a missing cell, or with fractions where the fitted
    dtype holds integers (a column not modelled as integers), stays as
    decoded, since a cast would change its values; so does one with draws
    beyond the range of a fitted integer dtype (a draw of 128 in an int8
    column), which numpy would wrap around."""
    if dtypes is None:
        return frame
    for name, dtype in zip(frame.columns, dtypes):
        column = frame[name]
        if column.dtype == dtype or column.isna().any():
            continue
        if isinstance(dtype, np.dtype) and dtype.kind in "iu":
            values = column.to_numpy(dtype=np.float64)
            limits = np.iinfo(dtype)
            if (not np.array_equal(values, np.round(values))
                    or values.min(initial=0) < limits.min or values.max(initial=0) > limits.max):
                continue
        try:
            cast = column.astype(dtype)
        except (TypeError, ValueError):  # e.g. fractions for pandas' nullable Int64
            continue
        if not cast.isna().any():  # a value outside a categorical dtype's categories: NaN
            frame[name] = cast
    return frame
