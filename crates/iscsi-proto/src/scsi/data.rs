//! Parsers for the data-in of INQUIRY, READ CAPACITY and REPORT LUNS.
