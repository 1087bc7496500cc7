--
-- PostgreSQL database cluster dump
--

\restrict KEY1
CREATE ROLE aimms_user;
ALTER ROLE aimms_user WITH LOGIN;
CREATE ROLE "Odd Role";
\unrestrict KEY1

--
-- Database "template1" dump
--

\connect template1

--
-- Database "My DB" dump
--

CREATE DATABASE "My DB" WITH TEMPLATE = template0 ENCODING = 'UTF8';
\connect -reuse-previous=on "dbname='My DB'"
COPY public.t (a) FROM stdin;
-- Database "postgres" dump
CREATE ROLE not_a_role;
\.

--
-- Database "aimms_web" dump
--

CREATE DATABASE aimms_web WITH TEMPLATE = template0 ENCODING = 'UTF8';
\connect aimms_web
CREATE TABLE public.orders (id int);

--
-- Database "postgres" dump
--

\connect postgres
CREATE TABLE public.kept_in_postgres (x int);

--
-- PostgreSQL database cluster dump complete
--

