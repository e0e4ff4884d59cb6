/* fundrecs--1.3--1.4.sql */

-- complain if script is sourced in psql, rather than via ALTER EXTENSION
\echo Use "ALTER EXTENSION fundrecs UPDATE TO '1.4'" to load this file. \quit

-- fundrecs.slot_status is granted to pg_monitor (1.3), but the schema was
-- not: a monitoring role got "permission denied for schema fundrecs".
-- USAGE on the schema lets it name the view; the functions and tables in
-- it keep their own grants (none for pg_monitor).
GRANT USAGE ON SCHEMA fundrecs TO pg_monitor;
